//go:build !unix

package main

// fileLimit is a conservative guess where RLIMIT_NOFILE does not exist.
func fileLimit() int { return 1024 }
