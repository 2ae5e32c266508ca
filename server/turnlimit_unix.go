//go:build unix

package main

import "syscall"

// fileLimit is the process's soft RLIMIT_NOFILE (Go raises it to the hard
// limit at start), or 1024 if it cannot be read.
func fileLimit() int {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil || r.Cur == 0 {
		return 1024
	}
	return int(min(r.Cur, 1<<30))
}
