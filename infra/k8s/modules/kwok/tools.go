//go:build tools

// Package tools pins the command provision.py builds, so `go mod tidy` keeps its module.
package tools

import _ "sigs.k8s.io/kwok/cmd/kwok"
