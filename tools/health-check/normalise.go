package main

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
)

// The stand-ins written into captured objects, so that capturing the same state twice gives the
// same file.
const (
	fixedNamespace = "agents"
	fixedTime      = "2026-01-01T00:00:00Z"
	fixedRequestID = "req_0000000000000000"
)

var (
	// BeeOS instance ids (inst_<16 hex>); the simulator derives endpoints and other ids from
	// the same hex, so the hex alone is replaced everywhere.
	instanceID = regexp.MustCompile(`inst_([0-9a-f]{16})`)
	requestID  = regexp.MustCompile(`req_[0-9a-f]{16}`)
	timestamp  = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$`)
	// Keys the API server sets that differ on every run.
	volatileMetadata = []string{"uid", "resourceVersion", "managedFields", "generateName", "selfLink"}
)

// normalise turns a live object into a capture that does not change from run to run: no uid,
// resourceVersion or managedFields, one namespace, fixed timestamps, and instance and request
// ids numbered by first appearance. What decides a health verdict (generation,
// observedGeneration, whether deletionTimestamp is set, the conditions) is kept.
func normalise(obj map[string]any, namespace string) (map[string]any, error) {
	if metadata, ok := obj["metadata"].(map[string]any); ok {
		for _, key := range volatileMetadata {
			delete(metadata, key)
		}
	}
	text, err := json.Marshal(fixTimestamps(obj))
	if err != nil {
		return nil, err
	}
	replaced := string(text)
	if namespace != "" {
		replaced = strings.ReplaceAll(replaced, namespace, fixedNamespace)
	}
	seen := map[string]string{}
	for _, match := range instanceID.FindAllStringSubmatch(replaced, -1) {
		if _, ok := seen[match[1]]; !ok {
			seen[match[1]] = fmt.Sprintf("%016d", len(seen)+1)
		}
	}
	for hex, stand := range seen {
		replaced = strings.ReplaceAll(replaced, hex, stand)
	}
	replaced = requestID.ReplaceAllString(replaced, fixedRequestID)
	var out map[string]any
	if err := json.Unmarshal([]byte(replaced), &out); err != nil {
		return nil, err
	}
	return out, nil
}

// fixTimestamps replaces every RFC 3339 string value with one fixed time.
func fixTimestamps(value any) any {
	switch v := value.(type) {
	case map[string]any:
		for key, item := range v {
			v[key] = fixTimestamps(item)
		}
	case []any:
		for i, item := range v {
			v[i] = fixTimestamps(item)
		}
	case string:
		if timestamp.MatchString(v) {
			return fixedTime
		}
	}
	return value
}
