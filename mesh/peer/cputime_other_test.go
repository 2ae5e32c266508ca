//go:build !unix

package peer

import "time"

// cpuTime is zero where getrusage is missing: the benchmarks' CPU figures
// are then meaningless, their other figures are not.
func cpuTime() time.Duration { return 0 }
