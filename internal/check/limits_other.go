//go:build !unix

package check

// RaiseFileLimit does nothing where there is no RLIMIT_NOFILE; it returns 0
// (unknown).
func RaiseFileLimit() uint64 { return 0 }

func fileLimit() uint64 { return 0 }
