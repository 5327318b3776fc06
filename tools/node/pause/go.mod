module beeos-operator/tools/node/pause

go 1.24.0
