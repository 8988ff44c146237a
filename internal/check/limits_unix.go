//go:build unix

package check

import "syscall"

// RaiseFileLimit raises the soft limit on open files to the hard limit,
// where the system allows it, and returns the soft limit now in force
// (0 when it cannot be read). Many hosts in flight need many sockets; the
// common soft limit of 1024 would otherwise cap the default concurrency.
func RaiseFileLimit() uint64 {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0
	}
	if l.Cur < l.Max {
		n := l
		n.Cur = n.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &n); err == nil {
			l = n
		}
	}
	return uint64(l.Cur)
}

func fileLimit() uint64 {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0
	}
	return uint64(l.Cur)
}
