package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/tlsactl/tlsactl/internal/check"
	"golang.org/x/term"
)

// readDomains reads --domains-from input: one domain a line; blank lines
// and everything from a "#" on are ignored. A line with more than one word
// is an error naming the line, so a pasted CSV is not half read.
func readDomains(r io.Reader, name string) ([]string, error) {
	var out []string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		switch len(f) {
		case 0:
			continue
		case 1:
			out = append(out, f[0])
		default:
			return nil, fmt.Errorf("%s:%d: want one domain a line, got %q", name, n, strings.TrimSpace(line))
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading %s: %w", name, err)
	}
	return out, nil
}

// streamer writes each finished host and domain as it comes: one JSON
// object a line with --json, else the text lines of printCheckText for that
// host or domain. Calls are serialised by check.Run.
type streamer struct {
	w    io.Writer
	json bool
	err  error // the first write error; later writes are skipped
}

func (s *streamer) result(r check.Result) {
	if s.err != nil {
		return
	}
	if s.json {
		b, err := json.Marshal(r)
		if err != nil {
			s.err = err
			return
		}
		_, s.err = s.w.Write(append(b, '\n'))
		return
	}
	var b strings.Builder
	for _, f := range r.Findings {
		if f.Severity != check.OK {
			b.WriteString(f.String() + "\n")
		}
	}
	if r.Host != nil {
		writeHostText(&b, *r.Host)
	}
	_, s.err = io.WriteString(s.w, b.String())
}

// summaryLine is the last JSON line of a streamed run.
type summaryLine struct {
	Type string `json:"type"` // "summary"
	check.Summary
}

// writeSummaryText prints the counts of a run: hosts and domains per
// status, findings per code (most frequent first).
func writeSummaryText(b *strings.Builder, s check.Summary) {
	counts := func(m map[string]int) string {
		var parts []string
		for _, st := range []check.Severity{check.OK, check.Warning, check.Critical, check.Unknown} {
			if n := m[st.String()]; n > 0 {
				parts = append(parts, fmt.Sprintf("%d %s", n, st))
			}
		}
		if parts == nil {
			return "none"
		}
		return strings.Join(parts, ", ")
	}
	if s.Domains > 0 {
		fmt.Fprintf(b, "domains: %d (%s)\n", s.Domains, counts(s.DomainStatus))
	}
	fmt.Fprintf(b, "hosts: %d (%s)\n", s.Hosts, counts(s.HostStatus))
	if len(s.Findings) > 0 {
		codes := make([]string, 0, len(s.Findings))
		for c := range s.Findings {
			codes = append(codes, c)
		}
		slices.SortFunc(codes, func(x, y string) int {
			if s.Findings[x] != s.Findings[y] {
				return s.Findings[y] - s.Findings[x]
			}
			return strings.Compare(x, y)
		})
		var parts []string
		for _, c := range codes {
			parts = append(parts, fmt.Sprintf("%s %d", c, s.Findings[c]))
		}
		fmt.Fprintf(b, "findings: %s\n", strings.Join(parts, ", "))
	}
}

// progress shows done/total, rate, ETA and the worst status so far on
// stderr, only when stderr is a terminal: cron jobs and pipes get nothing.
// A nil *progress does nothing.
type progress struct {
	mu    sync.Mutex
	bar   *progressbar.ProgressBar
	worst check.Severity
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// newProgress returns a progress display on w for total units (domains and
// hosts given directly, counted as unit), or nil when w is not a terminal or
// total is 0.
func newProgress(w io.Writer, total int, unit string) *progress {
	if total == 0 || !isTerminal(w) {
		return nil
	}
	return &progress{bar: progressbar.NewOptions(total,
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription("checking, worst so far: OK"),
		progressbar.OptionShowCount(),
		progressbar.OptionShowIts(),
		progressbar.OptionSetItsString(unit),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionSetElapsedTime(true),
		progressbar.OptionThrottle(200*time.Millisecond),
		progressbar.OptionClearOnFinish(),
		progressbar.OptionSetWidth(30),
	)}
}

// result counts a finished domain or direct host and tracks the worst
// status.
func (p *progress) result(r check.Result) {
	if p == nil || (r.Type == "host" && !r.Direct) {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if w := check.Worst(p.worst, r.Status); w != p.worst {
		p.worst = w
		p.bar.Describe("checking, worst so far: " + w.String())
	}
	_ = p.bar.Add(1)
}

// clear removes the display before other output to the same terminal; the
// next result draws it again.
func (p *progress) clear() {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	_ = p.bar.Clear()
}

// finish clears the display.
func (p *progress) finish() {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	_ = p.bar.Finish()
}
