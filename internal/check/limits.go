package check

import (
	"bufio"
	"bytes"
	"os"
	"strconv"
	"strings"
)

// How the default concurrency is derived (DefaultConcurrency):
//
//   - file descriptors: a host in flight holds one socket per address being
//     probed; fdsPerHost assumes two (an IPv4 and an IPv6 address), and
//     fdReserve plus two sockets per DNS lookup slot (A and AAAA go out
//     together) are kept back for the resolver, stdio and files;
//   - memory: memPerHost is the estimate for one host in flight (two TLS
//     connections with their 16 KiB record buffers each way, the parsed
//     chains, bufio buffers and goroutine stacks), and at most a quarter of
//     the available memory (cgroup limit or MemAvailable) is planned for;
//   - maxDefaultConcurrency caps it: past about a thousand hosts in flight
//     the TLS handshakes' CPU, not waiting, is the limit, and more in
//     flight only stretches each handshake towards its timeout.
const (
	fdsPerHost            = 2
	fdReserve             = 64
	memPerHost            = 256 << 10
	minDefaultConcurrency = 16
	maxDefaultConcurrency = 1024
)

// DefaultConcurrency returns the number of hosts to check at once when
// Config.Concurrency is zero: the least of what the file-descriptor soft
// limit allows, what a quarter of the available memory allows, and 1024;
// at least 16. Call RaiseFileLimit first to let it use the hard limit.
func DefaultConcurrency() int {
	return defaultConcurrency(fileLimit(), availableMemory(), DefaultDNSConcurrency)
}

func defaultConcurrency(fds, mem uint64, dnsSlots int) int {
	n := uint64(maxDefaultConcurrency)
	if fds > 0 {
		reserve := uint64(fdReserve + 2*dnsSlots)
		byFD := uint64(0)
		if fds > reserve {
			byFD = (fds - reserve) / fdsPerHost
		}
		n = min(n, byFD)
	}
	if mem > 0 {
		n = min(n, mem/4/memPerHost)
	}
	return int(max(n, minDefaultConcurrency))
}

// availableMemory returns the memory this process may use, in bytes: the
// cgroup v2 limit when there is one, else MemAvailable from /proc/meminfo,
// the smaller of the two; 0 when neither is known (not Linux).
func availableMemory() uint64 {
	var avail uint64
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) >= 2 && f[0] == "MemAvailable:" {
				if kb, err := strconv.ParseUint(f[1], 10, 64); err == nil {
					avail = kb << 10
				}
			}
		}
	}
	if b, err := os.ReadFile("/sys/fs/cgroup/memory.max"); err == nil {
		if lim, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err == nil && (avail == 0 || lim < avail) {
			avail = lim
		}
	}
	return avail
}
