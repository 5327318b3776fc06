"""Conformance of beeos-sim with BeeOS's official Python SDK (beeos-sdk, generated from the
contract): every call goes through the SDK, whose pydantic models validate each answer, and every
raw answer is also checked against the contract's schemas and listed status codes.

Needs BEEOS_SIM_URL (set by run.sh) and the tokens run.sh starts the simulator with."""

from __future__ import annotations

import json
import os
import time
import uuid
from datetime import timedelta
from pathlib import Path

import beeos_sdk
import pytest
import urllib3
from beeos_sdk import (
    ApiClient,
    Configuration,
    DeployApi,
    DeployInstanceRequest,
    InstanceDataDTO,
    InstancePageResponse,
    InstanceResponse,
    InstancesApi,
    StringResponse,
)
from beeos_sdk.exceptions import (
    ApiException,
    BadRequestException,
    ConflictException,
    ForbiddenException,
    NotFoundException,
    UnauthorizedException,
)

from contract_check import CONTRACT, Contract

ALICE = "oag_conformance_alice"
BOB = "oag_conformance_bob"
CAROL = "oag_conformance_carol"  # only the rate-limit test calls as carol
TRIAL_MS = 1500  # run.sh starts the simulator with --trial-ms 1500
INSTANCES = "/api/v1/instances"
INSTANCE = "/api/v1/instances/{id}"
DEADLINE_S = 10.0


@pytest.fixture(scope="session")
def base_url() -> str:
    url = os.environ.get("BEEOS_SIM_URL")
    if not url:
        pytest.fail("BEEOS_SIM_URL is not set; run tools/beeos-sim/conformance/run.sh")
    return url.rstrip("/")


@pytest.fixture(scope="session")
def contract() -> Contract:
    return Contract()


def client(base_url: str, token: str) -> ApiClient:
    return ApiClient(Configuration(host=base_url, access_token=token))


@pytest.fixture
def alice(base_url):
    with client(base_url, ALICE) as api_client:
        yield InstancesApi(api_client)


@pytest.fixture
def bob(base_url):
    with client(base_url, BOB) as api_client:
        yield InstancesApi(api_client)


@pytest.fixture
def carol(base_url):
    # No retries: urllib3's default would honour Retry-After and sleep out the refused call.
    with ApiClient(Configuration(host=base_url, access_token=CAROL, retries=0)) as api_client:
        yield api_client


@pytest.fixture
def deploy_api(base_url):
    with client(base_url, ALICE) as api_client:
        yield DeployApi(api_client)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def checked(contract: Contract, method: str, path: str, response):
    """Checks an SDK `*_with_http_info` answer against the contract and returns its data."""
    contract.check(method, path, response.status_code, response.raw_data)
    return response.data


def checked_error(contract: Contract, method: str, path: str, exc: ApiException) -> beeos_sdk.Error:
    """Checks an SDK exception's raw answer against the contract and returns its `error`."""
    contract.check(method, path, exc.status, exc.body)
    headers = {k.lower(): v for k, v in (exc.headers or {}).items()}
    error = exc.data.error
    assert error.request_id and error.request_id == headers.get("x-request-id")
    return error


def deploy(api: InstancesApi, contract: Contract, **fields) -> InstanceDataDTO:
    request = DeployInstanceRequest(**fields)
    response = api.deploy_instance_with_http_info(deploy_instance_request=request)
    body = checked(contract, "POST", INSTANCES, response)
    assert response.status_code == 201
    assert isinstance(body, InstanceResponse) and body.success is True
    return body.data


def wait_for(api: InstancesApi, contract: Contract, instance_id: str, status: str) -> InstanceDataDTO:
    deadline = time.monotonic() + DEADLINE_S
    while True:
        data = checked(contract, "GET", INSTANCE, api.get_instance_with_http_info(id=instance_id)).data
        if data.status == status:
            return data
        assert time.monotonic() < deadline, f"{instance_id} still {data.status}, wanted {status}"
        time.sleep(0.02)


def test_the_vendored_contract_matches_the_shared_one():
    shared = Path(__file__).resolve().parents[4] / "shared" / "contracts" / CONTRACT.name
    if not shared.exists():
        pytest.skip(f"{shared} not present")
    assert CONTRACT.read_bytes() == shared.read_bytes(), "copy the shared contract again"


def test_catalog_calls_return_typed_items(deploy_api, contract):
    providers = checked(contract, "GET", "/api/v1/providers", deploy_api.list_providers_with_http_info())
    assert providers.success and providers.data
    ids = [p.meta.id for p in providers.data]
    assert "default" in ids
    assert all(p.capabilities.long_running is not None for p in providers.data)

    for provider_id in (None, ids[0]):
        regions = checked(
            contract,
            "GET",
            "/api/v1/deploy/regions",
            deploy_api.list_deploy_regions_with_http_info(provider_id=provider_id),
        )
        assert regions.data and all(isinstance(r.available, bool) for r in regions.data)

    models = checked(
        contract,
        "GET",
        "/api/v1/deploy/models",
        deploy_api.list_deploy_models_with_http_info(agent_framework="beeos-claw"),
    )
    assert models.data and all(m.tier for m in models.data)

    with pytest.raises(BadRequestException) as bad:
        deploy_api.list_deploy_regions(provider_id="no-such-provider")
    error = checked_error(contract, "GET", "/api/v1/deploy/regions", bad.value)
    assert (error.code, error.param) == ("invalid_param", "providerId")


def test_full_lifecycle_through_the_sdk(alice, contract):
    name = unique("conf-life")
    created = deploy(
        alice,
        contract,
        name=name,
        variant_id="beeos-claw-small",
        config={"apiKeys": {"anthropic": "sk-conformance"}, "apiBaseUrls": {"anthropic": "http://127.0.0.1:9"}},
    )
    assert (created.status, created.desired_status, created.name) == ("pending", "running", name)
    assert "apiKeys" not in created.provider_config
    assert created.provider_config["apiBaseUrls"] == {"anthropic": "http://127.0.0.1:9"}
    assert created.created_at is not None and created.created_at.tzinfo is not None

    running = wait_for(alice, contract, created.id, "running")
    assert running.connectivity == "online" and running.started_at is not None

    stopped = checked(contract, "POST", INSTANCE + "/stop", alice.stop_instance_with_http_info(id=created.id))
    assert stopped.data.desired_status == "stopped"
    assert wait_for(alice, contract, created.id, "stopped").connectivity == "offline"

    started = checked(contract, "POST", INSTANCE + "/start", alice.start_instance_with_http_info(id=created.id))
    assert (started.data.status, started.data.desired_status) == ("provisioning", "running")
    wait_for(alice, contract, created.id, "running")

    restarted = checked(contract, "POST", INSTANCE + "/restart", alice.restart_instance_with_http_info(id=created.id))
    assert restarted.data.status == "provisioning"
    wait_for(alice, contract, created.id, "running")

    destroyed = checked(contract, "DELETE", INSTANCE, alice.destroy_instance_with_http_info(id=created.id))
    assert isinstance(destroyed, StringResponse) and destroyed.data == "destroyed"
    terminated = wait_for(alice, contract, created.id, "terminated")
    assert terminated.desired_status == "terminated"

    deadline = time.monotonic() + DEADLINE_S
    while True:
        try:
            alice.get_instance(id=created.id)
        except NotFoundException as gone:
            error = checked_error(contract, "GET", INSTANCE, gone)
            assert error.code == "agent_not_found"
            break
        assert time.monotonic() < deadline, "terminated instance never expired"
        time.sleep(0.05)


def test_list_pages_with_total_and_search(alice, contract):
    prefix = unique("conf-page")
    ids = [deploy(alice, contract, name=f"{prefix}-{n}", agent_framework="openclaw").id for n in range(5)]
    deploy(alice, contract, name=unique("conf-other"), agent_framework="openclaw")

    seen = []
    for page in range(3):
        response = alice.list_instances_with_http_info(page=page, page_size=2, search=prefix.upper())
        body = checked(contract, "GET", INSTANCES, response)
        assert isinstance(body, InstancePageResponse)
        assert body.total == 5
        seen += [i.id for i in body.data]
    assert seen == ids

    filtered = alice.list_instances(
        page=0, page_size=200, agent_framework="openclaw", provider_id="default", search=prefix
    )
    assert filtered.total == 5
    nothing = alice.list_instances(page=0, page_size=200, provider_id="byod", search=prefix)
    assert (nothing.total, nothing.data) == (0, [])


def test_errors_surface_as_sdk_exceptions_with_the_envelope(base_url, alice, contract):
    with client(base_url, "oag_not_a_token") as stranger_client:
        stranger = InstancesApi(stranger_client)
        with pytest.raises(UnauthorizedException) as unauthorized:
            stranger.list_instances(page=0, page_size=10)
    error = checked_error(contract, "GET", INSTANCES, unauthorized.value)
    assert (error.code, error.type) == ("invalid_token", "authentication_error")

    with pytest.raises(NotFoundException) as missing:
        alice.get_instance(id="inst_does_not_exist")
    assert checked_error(contract, "GET", INSTANCE, missing.value).code == "agent_not_found"

    mine = deploy(alice, contract, name=unique("conf-err"), variant_id="beeos-claw-small")
    # Starting an instance that is not stopped conflicts.
    with pytest.raises(ConflictException) as conflict:
        alice.start_instance(id=mine.id)
    error = checked_error(contract, "POST", INSTANCE + "/start", conflict.value)
    assert (error.code, error.type) == ("conflict", "conflict_error")

    with pytest.raises(BadRequestException) as neither:
        alice.deploy_instance(deploy_instance_request=DeployInstanceRequest(name="x"))
    error = checked_error(contract, "POST", INSTANCES, neither.value)
    assert (error.code, error.param) == ("missing_param", "variantId")

    with pytest.raises(BadRequestException) as unknown_variant:
        alice.deploy_instance(deploy_instance_request=DeployInstanceRequest(name="x", variant_id="nope"))
    error = checked_error(contract, "POST", INSTANCES, unknown_variant.value)
    assert (error.code, error.param) == ("invalid_param", "variantId")


def raw_post(base_url: str, body: bytes) -> urllib3.BaseHTTPResponse:
    return urllib3.request(
        "POST",
        base_url + INSTANCES,
        body=body,
        headers={"Authorization": f"Bearer {ALICE}", "Content-Type": "application/json"},
        retries=False,
    )


def test_raw_requests_the_sdk_cannot_send_get_the_documented_errors(base_url, contract):
    # Scheduling fields are not in the SDK's model; the server refuses them.
    refused = raw_post(base_url, json.dumps({"name": "x", "variantId": "beeos-claw-small", "maxPricePerHour": 2}).encode())
    contract.check("POST", INSTANCES, refused.status, refused.data)
    assert refused.status == 400
    assert refused.json()["error"]["param"] == "maxPricePerHour"

    too_large = raw_post(base_url, b'{"name":"x","pad":"' + b"x" * (64 * 1024) + b'"}')
    contract.check("POST", INSTANCES, too_large.status, too_large.data)
    assert (too_large.status, too_large.json()["error"]["code"]) == (413, "payload_too_large")

    not_json = raw_post(base_url, b"{nope")
    contract.check("POST", INSTANCES, not_json.status, not_json.data)
    assert not_json.json()["error"]["code"] == "invalid_json"

    bad_page = urllib3.request(
        "GET", base_url + INSTANCES + "?pageSize=201", headers={"Authorization": f"Bearer {ALICE}"}, retries=False
    )
    contract.check("GET", INSTANCES, bad_page.status, bad_page.data)
    assert bad_page.json()["error"]["param"] == "pageSize"


def test_another_owners_instance_is_forbidden_on_every_call(alice, bob, contract):
    mine = deploy(alice, contract, name=unique("conf-owner"), variant_id="beeos-claw-small")
    calls = [
        ("GET", INSTANCE, bob.get_instance),
        ("POST", INSTANCE + "/start", bob.start_instance),
        ("POST", INSTANCE + "/stop", bob.stop_instance),
        ("POST", INSTANCE + "/restart", bob.restart_instance),
        ("DELETE", INSTANCE, bob.destroy_instance),
    ]
    for method, path, call in calls:
        with pytest.raises(ForbiddenException) as forbidden:
            call(id=mine.id)
        error = checked_error(contract, method, path, forbidden.value)
        assert (error.code, error.type) == ("forbidden", "permission_error"), (method, path)
        assert error.message == "Caller doesn't own the resource"
    # Never listed for bob, and still alice's, untouched.
    assert mine.id not in [i.id for i in bob.list_instances(page=0, page_size=200).data]
    assert alice.get_instance(id=mine.id).data.desired_status == "running"
    # An id nobody has stays 404.
    with pytest.raises(NotFoundException) as missing:
        bob.get_instance(id="inst_nobodys")
    assert checked_error(contract, "GET", INSTANCE, missing.value).code == "agent_not_found"


@pytest.fixture
def rate_limited(base_url):
    """A rate limit with (next to) no refill while the test runs; off again afterwards."""
    settings = base_url + "/_sim/settings"

    def put(body: dict) -> None:
        response = urllib3.request("PUT", settings, body=json.dumps(body).encode(), retries=False)
        assert response.status == 200, response.data

    put({"rateLimitPerSecond": 0.0001, "rateLimitBurst": 2})
    yield
    put({"rateLimitPerSecond": 0})


def test_rate_limits_are_per_caller_and_endpoint(carol, rate_limited, contract):
    instances, catalog = InstancesApi(carol), DeployApi(carol)
    for _ in range(2):
        checked(contract, "GET", INSTANCES, instances.list_instances_with_http_info(page=0, page_size=10))
    with pytest.raises(ApiException) as limited:
        instances.list_instances(page=0, page_size=10)
    assert limited.value.status == 429
    error = checked_error(contract, "GET", INSTANCES, limited.value)
    assert (error.code, error.type) == ("rate_limited", "rate_limit_error")
    headers = {k.lower(): v for k, v in (limited.value.headers or {}).items()}
    assert int(headers["retry-after"]) >= 1

    # The burst on the list left every other endpoint's budget whole.
    for _ in range(2):
        checked(contract, "GET", "/api/v1/providers", catalog.list_providers_with_http_info())
        with pytest.raises(NotFoundException) as missing:
            instances.get_instance(id="inst_nobodys")
        checked_error(contract, "GET", INSTANCE, missing.value)
    with pytest.raises(ApiException) as limited_too:
        catalog.list_providers()
    assert limited_too.value.status == 429
    checked_error(contract, "GET", "/api/v1/providers", limited_too.value)


def test_a_trial_instance_expires_into_stopped_and_run_seconds_follow_the_timestamps(alice, contract):
    trial = deploy(alice, contract, name=unique("conf-trial"), variant_id="beeos-claw-trial")
    assert trial.is_trial is True
    assert trial.expires_at - trial.created_at == timedelta(milliseconds=TRIAL_MS)
    regular = deploy(alice, contract, name=unique("conf-regular"), variant_id="beeos-claw-small")
    assert regular.is_trial is False and regular.expires_at is None and regular.halt_reason is None

    expired = wait_for(alice, contract, trial.id, "stopped")
    assert (expired.desired_status, expired.connectivity, expired.halt_reason) == (
        "stopped",
        "offline",
        "trial_expired",
    )
    assert expired.stopped_at == trial.expires_at
    # It ran from startedAt to its expiry, and the counter says so in whole seconds.
    ran = expired.stopped_at - expired.started_at
    assert expired.total_run_seconds == int(ran.total_seconds())
    with pytest.raises(ConflictException) as conflict:
        alice.start_instance(id=trial.id)
    checked_error(contract, "POST", INSTANCE + "/start", conflict.value)
    again = checked(contract, "GET", INSTANCE, alice.get_instance_with_http_info(id=trial.id)).data
    assert (again.status, again.total_run_seconds, again.halt_reason) == (
        "stopped",
        expired.total_run_seconds,
        "trial_expired",
    )
