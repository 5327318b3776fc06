package main

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	lua "github.com/yuin/gopher-lua"
	luajson "layeh.com/gopher-json"
)

// HealthStatus is Argo CD's verdict on one resource (gitops-engine's health.HealthStatus).
type HealthStatus struct {
	Status  string `json:"status,omitempty"`
	Message string `json:"message,omitempty"`
}

// The statuses Argo CD accepts from a script; anything else becomes Unknown.
var argoHealthStatuses = map[string]bool{
	"Unknown": true, "Progressing": true, "Suspended": true, "Healthy": true, "Degraded": true, "Missing": true,
}

// argoHealth runs a health script the way Argo CD's application controller does (util/lua):
// the object as the global `obj`, a one-second budget, and the script's returned table read
// through JSON. Without openLibs only the package, base and table libraries are loaded (Argo CD
// also offers os.time and os.date, which the script does not use), as for a script set in
// argocd-cm (resource.customizations.health.<group>_<kind>) unless
// resource.customizations.useOpenLibs.<group>_<kind> is "true"; Argo CD's built-in scripts, and
// its tests of them, run with every standard library.
func argoHealth(obj map[string]any, script string, openLibs bool) (HealthStatus, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: !openLibs})
	defer l.Close()
	for name, open := range map[string]lua.LGFunction{
		lua.LoadLibName: lua.OpenPackage,
		lua.BaseLibName: lua.OpenBase,
		lua.TabLibName:  lua.OpenTable,
	} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(open), NRet: 0, Protect: true}, lua.LString(name)); err != nil {
			return HealthStatus{}, fmt.Errorf("opening the %s library: %w", name, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", luaValue(l, obj))
	if err := l.DoString(script); err != nil {
		return HealthStatus{}, err
	}

	returned := l.Get(-1)
	switch returned.Type() {
	case lua.LTNil:
		return HealthStatus{}, nil
	case lua.LTTable:
	default:
		return HealthStatus{}, fmt.Errorf("expect table output from Lua script, not %s", returned.Type())
	}
	encoded, err := luajson.Encode(returned)
	if err != nil {
		return HealthStatus{}, err
	}
	var health HealthStatus
	if err := json.Unmarshal(encoded, &health); err != nil {
		// An empty table encodes as [].
		if string(encoded) == "[]" {
			return HealthStatus{}, nil
		}
		return HealthStatus{}, err
	}
	if !argoHealthStatuses[health.Status] {
		return HealthStatus{Status: "Unknown", Message: "Lua returned an invalid health status"}, nil
	}
	return health, nil
}

// luaValue converts a decoded JSON or YAML value to Lua as Argo CD does: numbers become Lua
// numbers, objects and arrays tables, null nil.
func luaValue(l *lua.LState, value any) lua.LValue {
	switch v := value.(type) {
	case bool:
		return lua.LBool(v)
	case string:
		return lua.LString(v)
	case json.Number:
		return lua.LString(v)
	case float64:
		return lua.LNumber(v)
	case int:
		return lua.LNumber(v)
	case int32:
		return lua.LNumber(v)
	case int64:
		return lua.LNumber(v)
	case []any:
		table := l.CreateTable(len(v), 0)
		for _, item := range v {
			table.Append(luaValue(l, item))
		}
		return table
	case map[string]any:
		table := l.CreateTable(0, len(v))
		for key, item := range v {
			table.RawSetH(lua.LString(key), luaValue(l, item))
		}
		return table
	}
	return lua.LNil
}
