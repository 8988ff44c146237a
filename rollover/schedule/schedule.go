// Package schedule describes the recurring deploy windows in which a
// scheduled certificate migration may take a step, e.g.
// "Mon-Fri 02:00-05:00 Europe/Amsterdam".
//
// A window is a set of weekdays and a daily wall-clock range in one time
// zone. A range that ends before it starts crosses midnight and belongs to
// the day it starts: "Sat 22:00-06:00 UTC" covers Saturday 22:00 to Sunday
// 06:00. On days with a clock change an occurrence starts and ends at the
// first instant whose wall clock reaches the window's start and end times:
// "02:00-05:00 Europe/Amsterdam" opens at 03:00 CEST on the spring-forward
// day, and uses the first (CEST) 02:00 on the fall-back day. An occurrence
// that a clock change leaves empty is skipped.
//
// The package is pure: it never reads the clock and keeps no state. It does
// not know holidays or blackout dates, and it does not decide how long a
// task may run; a task started inside a window may run past its end.
package schedule

import (
	"fmt"
	"strings"
	"time"
)

const day = 24 * 60 // minutes

// form is the expected form of a window, quoted in errors.
const form = `want DAYS HH:MM-HH:MM ZONE, e.g. "Mon-Fri 02:00-05:00 Europe/Amsterdam"`

// Window is one recurring deploy window: a set of weekdays and a daily time
// range in a time zone. Build it with [Parse]; the zero Window is invalid
// and never opens. Compare windows with [Window.Equal], not ==.
type Window struct {
	days  uint8 // bit i set: time.Weekday(i) is in the window
	start int   // minutes after local midnight, 0 ≤ start < 1440
	end   int   // 0 < end ≤ 1440; end < start crosses midnight
	zone  string
	loc   *time.Location
}

// Parse reads one window: DAYS HH:MM-HH:MM ZONE, separated by white space.
//
// DAYS is "daily" or a comma-separated list of weekdays (Mon … Sun or Monday
// … Sunday, any case) and ranges of them; a range may wrap the week
// ("Fri-Mon"). The time range is wall-clock time; an end before the start
// crosses midnight, an end of 00:00 means midnight at the end of the day (it
// is the same as 24:00), and start == end is rejected as empty except
// 00:00-24:00. ZONE is required: "UTC" or an IANA name, loaded with
// [time.LoadLocation]; "Local" is rejected because it depends on the
// machine.
//
// Errors are one line naming the bad part and the expected form.
func Parse(s string) (Window, error) {
	fields := strings.Fields(s)
	fail := func(format string, args ...any) (Window, error) {
		return Window{}, fmt.Errorf("window %q: "+format, append([]any{s}, args...)...)
	}
	switch {
	case len(fields) > 3:
		return fail("unexpected %q: %s", fields[3], form)
	case len(fields) == 0:
		return fail("days missing: %s", form)
	}
	var w Window
	var err error
	if w.days, err = parseDays(fields[0]); err != nil {
		return fail("days %q: %v", fields[0], err)
	}
	if len(fields) < 2 {
		return fail("time range missing: %s", form)
	}
	if w.start, w.end, err = parseRange(fields[1]); err != nil {
		return fail("time range %q: %v", fields[1], err)
	}
	if len(fields) < 3 {
		return fail("time zone missing: want an IANA name such as Europe/Amsterdam, or UTC")
	}
	w.zone = fields[2]
	if w.zone == "Local" {
		return fail("time zone %q depends on the machine: want an IANA name such as Europe/Amsterdam, or UTC", w.zone)
	}
	if w.loc, err = time.LoadLocation(w.zone); err != nil {
		return fail("time zone %q: %w: want an IANA name such as Europe/Amsterdam, or UTC", w.zone, err)
	}
	return w, nil
}

const daysForm = `want "daily" or weekdays Mon…Sun (or Monday…Sunday) in a list with ',' and ranges with '-', e.g. "Mon-Fri" or "Sat,Sun"`

func parseDays(s string) (uint8, error) {
	if strings.EqualFold(s, "daily") {
		return 0x7f, nil
	}
	var days uint8
	for item := range strings.SplitSeq(s, ",") {
		first, last, isRange := strings.Cut(item, "-")
		a, ok := parseWeekday(first)
		if !ok {
			return 0, fmt.Errorf("bad day %q: %s", first, daysForm)
		}
		b := a
		if isRange {
			if b, ok = parseWeekday(last); !ok {
				return 0, fmt.Errorf("bad day %q: %s", last, daysForm)
			}
		}
		for d := a; ; d = (d + 1) % 7 {
			days |= 1 << d
			if d == b {
				break
			}
		}
	}
	return days, nil
}

// abbrev returns the three-letter name of a weekday, "Sun" for 0.
func abbrev(d int) string { return time.Weekday(d).String()[:3] }

func parseWeekday(s string) (time.Weekday, bool) {
	for d := range 7 {
		if strings.EqualFold(s, abbrev(d)) || strings.EqualFold(s, time.Weekday(d).String()) {
			return time.Weekday(d), true
		}
	}
	return 0, false
}

func parseRange(s string) (start, end int, err error) {
	a, b, ok := strings.Cut(s, "-")
	if !ok {
		return 0, 0, fmt.Errorf("want HH:MM-HH:MM")
	}
	if start, ok = parseClock(a); !ok {
		return 0, 0, fmt.Errorf("want HH:MM-HH:MM")
	}
	if end, ok = parseClock(b); !ok {
		return 0, 0, fmt.Errorf("want HH:MM-HH:MM")
	}
	switch {
	case start > day || end > day:
		return 0, 0, fmt.Errorf("hour or minute out of range: want HH:MM-HH:MM from 00:00 to 24:00")
	case start == day:
		return 0, 0, fmt.Errorf("start 24:00 out of range: want HH:MM-HH:MM, start from 00:00 to 23:59")
	case start == end:
		return 0, 0, fmt.Errorf("start equals end (empty window): want HH:MM-HH:MM with different times, or 00:00-24:00 for the whole day")
	case end == 0:
		end = day // a range ending at midnight ends at the end of its day
	}
	return start, end, nil
}

// parseClock reads HH:MM strictly (two digits each) into minutes after
// midnight; the caller checks the range, which lets 24:00 through.
func parseClock(s string) (int, bool) {
	if len(s) != 5 || s[2] != ':' {
		return 0, false
	}
	n := 0
	for i, c := range []byte(s) {
		if i == 2 {
			continue
		}
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	h, m := n/100, n%100
	if h > 24 || m > 59 {
		return day + 1, true // out of range, reported by the caller
	}
	return h*60 + m, true
}

// String returns the canonical form of w, which Parse reads back to an
// equal window: days as "daily" or Monday-first runs ("Mon-Fri", "Sat,Sun",
// "Mon,Wed,Fri-Sun", "Wed,Fri-Mon"), the range with an end at midnight written as 24:00, and the
// zone name as given. It does not validate w; the zero Window prints as
// "none 00:00-00:00 -", which Parse rejects.
func (w Window) String() string {
	zone := w.zone
	if zone == "" {
		zone = "-"
	}
	return fmt.Sprintf("%s %02d:%02d-%02d:%02d %s", formatDays(w.days),
		w.start/60, w.start%60, w.end/60, w.end%60, zone)
}

func formatDays(days uint8) string {
	switch days & 0x7f {
	case 0:
		return "none"
	case 0x7f:
		return "daily"
	}
	// Runs of consecutive days, Monday first (position p is weekday p+1).
	type run struct{ first, last int }
	var runs []run
	for p := range 7 {
		if days&(1<<((p+1)%7)) == 0 {
			continue
		}
		if n := len(runs); n > 0 && runs[n-1].last == p-1 {
			runs[n-1].last = p
		} else {
			runs = append(runs, run{p, p})
		}
	}
	// A run through Sunday into Monday is written as one wrapping range
	// ("Fri-Mon") if that gives at least three days; "Sun,Mon" stays split.
	if n := len(runs); n > 1 && runs[0].first == 0 && runs[n-1].last == 6 &&
		runs[0].last+1+7-runs[n-1].first >= 3 {
		runs[n-1].last = runs[0].last
		runs = runs[1:]
	}
	var parts []string
	for _, r := range runs {
		first, last := abbrev((r.first+1)%7), abbrev((r.last+1)%7)
		switch (r.last - r.first + 7) % 7 {
		case 0:
			parts = append(parts, first)
		case 1:
			parts = append(parts, first+","+last)
		default:
			parts = append(parts, first+"-"+last)
		}
	}
	return strings.Join(parts, ",")
}

// Equal reports whether w and o are the same window: the same days, times
// and zone name. It does not detect windows that differ only in spelling of
// an equivalent zone (e.g. "UTC" and "Etc/UTC").
func (w Window) Equal(o Window) bool {
	return w.days == o.days && w.start == o.start && w.end == o.end && w.zone == o.zone
}

// next returns the earliest instant ≥ t inside an occurrence of w that
// starts on a local day from D+from to D+to, D being t's date in w's zone,
// and the end of that occurrence (the latest, if several contain it).
func (w Window) next(t time.Time, from, to int) (start, end time.Time, ok bool) {
	if w.days == 0 || w.loc == nil {
		return start, end, false
	}
	y, m, d := t.In(w.loc).Date()
	endMin := w.end
	if w.end < w.start {
		endMin += day
	}
	for k := from; k <= to; k++ {
		if w.days&(1<<time.Date(y, m, d+k, 0, 0, 0, 0, time.UTC).Weekday()) == 0 {
			continue
		}
		s := firstAt(y, m, d+k, w.start, w.loc)
		e := firstAt(y, m, d+k, endMin, w.loc)
		if !e.After(s) || !e.After(t) {
			continue // emptied by a clock change, or already over
		}
		if s.Before(t) {
			s = t
		}
		if !ok || s.Before(start) || s.Equal(start) && e.After(end) {
			start, end, ok = s, e, true
		}
	}
	return start, end, ok
}

// firstAt returns the first instant whose wall clock in loc reaches the
// given minute of the given day (min may exceed a day). time.Date alone
// does not do that: in a spring-forward gap it may land past the first
// instant, and on a fall-back day it may pick the second occurrence.
func firstAt(y int, mo time.Month, d, min int, loc *time.Location) time.Time {
	want := time.Date(y, mo, d, 0, min, 0, 0, time.UTC)
	t := time.Date(y, mo, d, 0, min, 0, 0, loc)
	switch got := wall(t); {
	case got.After(want): // in a gap; t is after it, which began where t's zone did
		if zs, _ := t.ZoneBounds(); !zs.IsZero() {
			return zs
		}
		return t
	case got.Before(want): // in a gap; t is before it, which begins where t's zone ends
		if _, ze := t.ZoneBounds(); !ze.IsZero() {
			return ze
		}
		return t
	}
	// The wall clock may also have shown want before t's zone began, if
	// the clock was turned back then.
	zs, _ := t.ZoneBounds()
	if zs.IsZero() {
		return t
	}
	_, before := zs.Add(-time.Second).Zone()
	_, now := t.Zone()
	if before <= now {
		return t
	}
	if alt := t.Add(-time.Duration(before-now) * time.Second); alt.Before(zs) && wall(alt).Equal(want) {
		return alt
	}
	return t
}

// wall returns t's wall clock as the same reading in UTC, for comparison.
func wall(t time.Time) time.Time {
	return time.Date(t.Year(), t.Month(), t.Day(), t.Hour(), t.Minute(), t.Second(), t.Nanosecond(), time.UTC)
}

// Windows is a set of windows; an empty (nil) set means "any time".
// Overlapping or adjacent windows are not merged.
type Windows []Window

// ParseAll parses each string with [Parse] and returns the first error. An
// empty list gives an empty set, which means "any time".
func ParseAll(ss []string) (Windows, error) {
	var ws Windows
	for _, s := range ss {
		w, err := Parse(s)
		if err != nil {
			return nil, err
		}
		ws = append(ws, w)
	}
	return ws, nil
}

// Contains reports whether t is inside a window; always true for an empty
// set. Occurrences include their start and exclude their end.
func (ws Windows) Contains(t time.Time) bool {
	if len(ws) == 0 {
		return true
	}
	for _, w := range ws {
		// An occurrence containing t starts on t's local day or the day
		// before (or after, if the clock was turned back over midnight);
		// one more day on each side is slack.
		if s, _, ok := w.next(t, -2, 1); ok && s.Equal(t) {
			return true
		}
	}
	return false
}

// searchDays bounds Next's search: a week plus a day for a window opening
// on t's weekday just before t, plus slack for a day that a clock change
// removes (Pacific/Apia skipped 2011-12-30).
const searchDays = 15

// Next returns the earliest instant start ≥ t inside a window (t itself
// when Contains(t)), and the end of that window occurrence: the first
// instant after start outside it. If several occurrences contain start, end
// is the latest of their ends; adjacent or overlapping occurrences are not
// merged, so the set may still be open at end. For an empty set Next
// returns t and the zero time. ok is false only if no window opens within
// about two weeks, which happens only for a set of zero Windows.
func (ws Windows) Next(t time.Time) (start, end time.Time, ok bool) {
	if len(ws) == 0 {
		return t, time.Time{}, true
	}
	for _, w := range ws {
		s, e, found := w.next(t, -2, searchDays)
		if found && (!ok || s.Before(start) || s.Equal(start) && e.After(end)) {
			start, end, ok = s, e, true
		}
	}
	return start, end, ok
}
