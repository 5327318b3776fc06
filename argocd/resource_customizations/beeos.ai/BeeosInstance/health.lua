-- BeeosInstance (beeos-operator): kstatus conditions Ready, Reconciling, Stalled and Synced.
local hs = {}

local function condition(type)
  if obj.status.conditions ~= nil then
    for _, c in ipairs(obj.status.conditions) do
      if c.type == type then
        return c
      end
    end
  end
  return nil
end

if obj.status == nil or obj.status.observedGeneration == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report the instance's status"
  return hs
end
if obj.status.observedGeneration ~= obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe the latest spec change"
  return hs
end

local ready = condition("Ready")
local stalled = condition("Stalled")
local synced = condition("Synced")

-- beeos.ai/paused: nothing progresses on purpose (the operator also reports it as Stalled,
-- reason Paused, so that kstatus does not wait on it).
if ready ~= nil and ready.reason == "Paused" then
  hs.status = "Suspended"
  hs.message = ready.message
  return hs
end
if synced ~= nil and synced.reason == "Paused" then
  hs.status = "Suspended"
  hs.message = synced.message
  return hs
end
-- A person must act: the message names the cause.
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = stalled.message
  return hs
end
if obj.metadata.deletionTimestamp == nil and ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message
  return hs
end

hs.status = "Progressing"
hs.message = "Waiting for the instance to become ready"
if ready ~= nil and ready.message ~= nil and ready.message ~= "" then
  hs.message = ready.message
end
-- A transient BeeOS error the operator retries (rate limit, 5xx, timeout).
if synced ~= nil and synced.status == "False" and synced.reason ~= "SpecDrift" and synced.message ~= nil and synced.message ~= "" then
  hs.message = hs.message .. "; retrying: " .. synced.message
end
return hs
