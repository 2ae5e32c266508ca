//go:build !unix

package main

// fileLimit is unknown off Unix; defaultMaxConns falls back to a constant.
func fileLimit() uint64 { return 0 }
