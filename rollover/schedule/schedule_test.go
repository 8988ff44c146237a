package schedule

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
	_ "time/tzdata" // the tests must not depend on the machine's zoneinfo
)

func TestParse(t *testing.T) {
	tests := []struct{ in, want string }{
		{"Mon-Fri 02:00-05:00 Europe/Amsterdam", "Mon-Fri 02:00-05:00 Europe/Amsterdam"},
		{"Sat,Sun 22:00-06:00 UTC", "Sat,Sun 22:00-06:00 UTC"},
		{"Mon-Sun 00:00-24:00 UTC", "daily 00:00-24:00 UTC"},
		{"daily 01:00-03:30 Europe/Amsterdam", "daily 01:00-03:30 Europe/Amsterdam"},
		{"DAILY 01:00-03:30 UTC", "daily 01:00-03:30 UTC"},
		{"fri-MON 12:00-13:00 UTC", "Fri-Mon 12:00-13:00 UTC"},
		{"  Monday,wednesday \t10:00-11:00  UTC ", "Mon,Wed 10:00-11:00 UTC"},
		{"Mon,Tue,Wed,Fri 10:00-11:00 UTC", "Mon-Wed,Fri 10:00-11:00 UTC"},
		{"Sun,Mon 10:00-11:00 UTC", "Mon,Sun 10:00-11:00 UTC"},
		{"Sun-Mon 10:00-11:00 UTC", "Mon,Sun 10:00-11:00 UTC"},
		{"Sat-Mon 10:00-11:00 UTC", "Sat-Mon 10:00-11:00 UTC"},
		{"Sun-Tue 10:00-11:00 UTC", "Sun-Tue 10:00-11:00 UTC"},
		{"Mon,Tue,Sat 10:00-11:00 UTC", "Mon,Tue,Sat 10:00-11:00 UTC"},
		{"Mon,Tue,Sat,Sun 10:00-11:00 UTC", "Sat-Tue 10:00-11:00 UTC"},
		{"Mon,Sat,Sun 10:00-11:00 UTC", "Sat-Mon 10:00-11:00 UTC"},
		{"Mon,Wed,Sun 10:00-11:00 UTC", "Mon,Wed,Sun 10:00-11:00 UTC"},
		{"Mon,Thu,Sat 10:00-11:00 UTC", "Mon,Thu,Sat 10:00-11:00 UTC"},
		{"Wed,Fri-Mon 10:00-11:00 UTC", "Wed,Fri-Mon 10:00-11:00 UTC"},
		{"Sat-Fri 10:00-11:00 UTC", "daily 10:00-11:00 UTC"},
		{"Tue-Tue 10:00-11:00 UTC", "Tue 10:00-11:00 UTC"},
		{"Mon,Mon,Monday 10:00-11:00 UTC", "Mon 10:00-11:00 UTC"},
		{"Mon,Wed,Fri,Sun 10:00-11:00 UTC", "Mon,Wed,Fri,Sun 10:00-11:00 UTC"},
		{"Thursday-Tuesday 10:00-11:00 UTC", "Thu-Tue 10:00-11:00 UTC"},
		{"Sat 22:00-00:00 UTC", "Sat 22:00-24:00 UTC"}, // ending at midnight is ending at 24:00
		{"Sat 23:59-00:00 America/New_York", "Sat 23:59-24:00 America/New_York"},
		{"Sat 00:00-23:59 Asia/Kolkata", "Sat 00:00-23:59 Asia/Kolkata"},
	}
	for _, tt := range tests {
		w, err := Parse(tt.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", tt.in, err)
			continue
		}
		if got := w.String(); got != tt.want {
			t.Errorf("Parse(%q).String() = %q, want %q", tt.in, got, tt.want)
		}
		back, err := Parse(w.String())
		if err != nil || !back.Equal(w) || back.String() != w.String() {
			t.Errorf("Parse(%q) = %v, %v; want %v back", w.String(), back, err, w)
		}
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		in   string
		want []string // substrings of the error
	}{
		{"Mon-Fri 2-5", []string{`window "Mon-Fri 2-5": time range "2-5": want HH:MM-HH:MM`}},
		{"", []string{`window "": days missing`, "want DAYS HH:MM-HH:MM ZONE"}},
		{"Mon-Fri", []string{`time range missing`, "want DAYS HH:MM-HH:MM ZONE"}},
		{"Mon-Fri 02:00-05:00", []string{`time zone missing`, "Europe/Amsterdam, or UTC"}},
		{"Mon-Fri 02:00-05:00 UTC now", []string{`unexpected "now"`, "want DAYS"}},
		{"Mox-Fri 02:00-05:00 UTC", []string{`days "Mox-Fri"`, `bad day "Mox"`, "Mon…Sun"}},
		{"Mon-Frj 02:00-05:00 UTC", []string{`days "Mon-Frj"`, `bad day "Frj"`}},
		{"Mon,,Tue 02:00-05:00 UTC", []string{`days "Mon,,Tue"`, `bad day ""`}},
		{"Mon-Tue-Wed 02:00-05:00 UTC", []string{`bad day "Tue-Wed"`}},
		{"daily,Mon 02:00-05:00 UTC", []string{`bad day "daily"`}},
		{"Mo 02:00-05:00 UTC", []string{`bad day "Mo"`}},
		{"Mon 02:00 UTC", []string{`time range "02:00": want HH:MM-HH:MM`}},
		{"Mon 2:00-05:00 UTC", []string{`time range "2:00-05:00": want HH:MM-HH:MM`}},
		{"Mon 02:00-05:00:00 UTC", []string{`time range "02:00-05:00:00": want HH:MM-HH:MM`}},
		{"Mon 0a:00-05:00 UTC", []string{`time range "0a:00-05:00"`}},
		{"Mon 25:00-05:00 UTC", []string{`time range "25:00-05:00"`, "out of range"}},
		{"Mon 02:60-05:00 UTC", []string{`time range "02:60-05:00"`, "out of range"}},
		{"Mon 02:00-24:01 UTC", []string{`time range "02:00-24:01"`, "out of range"}},
		{"Mon 24:00-05:00 UTC", []string{`time range "24:00-05:00"`, "start 24:00"}},
		{"Mon 02:00-02:00 UTC", []string{`time range "02:00-02:00"`, "empty"}},
		{"Mon 00:00-00:00 UTC", []string{`time range "00:00-00:00"`, "empty", "00:00-24:00"}},
		{"Mon 24:00-24:00 UTC", []string{`time range "24:00-24:00"`}},
		{"Mon 02:00-05:00 Europe/Amsterdan", []string{`time zone "Europe/Amsterdan"`, "Europe/Amsterdam, or UTC"}},
		{"Mon 02:00-05:00 Local", []string{`time zone "Local"`, "machine"}},
		{"Mon 02:00-05:00 ../etc/passwd", []string{`time zone "../etc/passwd"`}},
		{"Mon 02:00-05:00 +01:00", []string{`time zone "+01:00"`}},
		{"Mon 02:00-05:00\nUTC x", []string{`window "Mon 02:00-05:00\nUTC x"`, `unexpected "x"`}},
	}
	for _, tt := range tests {
		_, err := Parse(tt.in)
		if err == nil {
			t.Errorf("Parse(%q): no error", tt.in)
			continue
		}
		msg := err.Error()
		if strings.Contains(msg, "\n") {
			t.Errorf("Parse(%q): error is not one line: %q", tt.in, msg)
		}
		for _, want := range tt.want {
			if !strings.Contains(msg, want) {
				t.Errorf("Parse(%q) error %q does not contain %q", tt.in, msg, want)
			}
		}
	}
}

func TestParseAll(t *testing.T) {
	ws, err := ParseAll(nil)
	if err != nil || len(ws) != 0 {
		t.Errorf("ParseAll(nil) = %v, %v; want an empty set", ws, err)
	}
	ws, err = ParseAll([]string{"Mon 01:00-02:00 UTC", "Tue 01:00-02:00 Europe/Amsterdam"})
	if err != nil || len(ws) != 2 || ws[1].String() != "Tue 01:00-02:00 Europe/Amsterdam" {
		t.Errorf("ParseAll = %v, %v", ws, err)
	}
	_, err = ParseAll([]string{"Mon 01:00-02:00 UTC", "Tue 1-2 UTC"})
	if err == nil || !strings.Contains(err.Error(), `window "Tue 1-2 UTC"`) {
		t.Errorf("ParseAll with a bad window: error %v, want it to name the window", err)
	}
}

func mustParseAll(t testing.TB, ss ...string) Windows {
	t.Helper()
	ws, err := ParseAll(ss)
	if err != nil {
		t.Fatal(err)
	}
	return ws
}

// ts reads an RFC 3339 instant; the offset makes every instant unambiguous.
func ts(t testing.TB, s string) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// 2027-01-04 is a Monday.
func TestContainsNext(t *testing.T) {
	tests := []struct {
		name       string
		windows    []string
		at         string
		start, end string // start == at: Contains(at)
	}{
		{"inside", []string{"Mon-Fri 02:00-05:00 UTC"}, "2027-01-04T03:00:00Z", "2027-01-04T03:00:00Z", "2027-01-04T05:00:00Z"},
		{"at start", []string{"Mon-Fri 02:00-05:00 UTC"}, "2027-01-04T02:00:00Z", "2027-01-04T02:00:00Z", "2027-01-04T05:00:00Z"},
		{"just before", []string{"Mon-Fri 02:00-05:00 UTC"}, "2027-01-04T01:59:59.999999999Z", "2027-01-04T02:00:00Z", "2027-01-04T05:00:00Z"},
		{"at end", []string{"Mon-Fri 02:00-05:00 UTC"}, "2027-01-04T05:00:00Z", "2027-01-05T02:00:00Z", "2027-01-05T05:00:00Z"},
		{"Fri after to Mon", []string{"Mon-Fri 02:00-05:00 UTC"}, "2027-01-08T06:00:00Z", "2027-01-11T02:00:00Z", "2027-01-11T05:00:00Z"},
		{"Sat to Mon", []string{"Mon-Fri 02:00-05:00 UTC"}, "2027-01-09T03:00:00Z", "2027-01-11T02:00:00Z", "2027-01-11T05:00:00Z"},
		{"same day a week on", []string{"Mon 02:00-05:00 UTC"}, "2027-01-04T05:00:00Z", "2027-01-11T02:00:00Z", "2027-01-11T05:00:00Z"},

		{"night from Sat", []string{"Sat,Sun 22:00-06:00 UTC"}, "2027-01-10T03:00:00Z", "2027-01-10T03:00:00Z", "2027-01-10T06:00:00Z"},
		{"night from Sun", []string{"Sat,Sun 22:00-06:00 UTC"}, "2027-01-11T05:59:00Z", "2027-01-11T05:59:00Z", "2027-01-11T06:00:00Z"},
		{"no night from Fri", []string{"Sat,Sun 22:00-06:00 UTC"}, "2027-01-09T03:00:00Z", "2027-01-09T22:00:00Z", "2027-01-10T06:00:00Z"},
		{"night ahead", []string{"Sat,Sun 22:00-06:00 UTC"}, "2027-01-12T03:00:00Z", "2027-01-16T22:00:00Z", "2027-01-17T06:00:00Z"},
		{"night over the week", []string{"Sun 23:00-01:00 UTC"}, "2027-01-11T00:30:00Z", "2027-01-11T00:30:00Z", "2027-01-11T01:00:00Z"},
		{"to midnight", []string{"Sat 22:00-00:00 UTC"}, "2027-01-09T23:59:00Z", "2027-01-09T23:59:00Z", "2027-01-10T00:00:00Z"},

		{"Fri-Mon on Sun", []string{"Fri-Mon 12:00-13:00 UTC"}, "2027-01-10T12:30:00Z", "2027-01-10T12:30:00Z", "2027-01-10T13:00:00Z"},
		{"Fri-Mon on Mon", []string{"Fri-Mon 12:00-13:00 UTC"}, "2027-01-11T12:30:00Z", "2027-01-11T12:30:00Z", "2027-01-11T13:00:00Z"},
		{"Fri-Mon from Tue", []string{"Fri-Mon 12:00-13:00 UTC"}, "2027-01-12T12:30:00Z", "2027-01-15T12:00:00Z", "2027-01-15T13:00:00Z"},
		{"Fri-Mon from Thu", []string{"Fri-Mon 12:00-13:00 UTC"}, "2027-01-14T12:30:00Z", "2027-01-15T12:00:00Z", "2027-01-15T13:00:00Z"},

		{"whole day", []string{"Mon-Sun 00:00-24:00 UTC"}, "2027-01-06T17:00:00Z", "2027-01-06T17:00:00Z", "2027-01-07T00:00:00Z"},
		{"whole day at midnight", []string{"daily 00:00-24:00 UTC"}, "2027-01-07T00:00:00Z", "2027-01-07T00:00:00Z", "2027-01-08T00:00:00Z"},

		{"overlap: latest end", []string{"Mon 10:00-12:00 UTC", "Mon 11:00-14:00 UTC"}, "2027-01-04T11:30:00Z", "2027-01-04T11:30:00Z", "2027-01-04T14:00:00Z"},
		{"overlap: first to open", []string{"Mon 11:00-14:00 UTC", "Mon 10:00-12:00 UTC"}, "2027-01-04T09:00:00Z", "2027-01-04T10:00:00Z", "2027-01-04T12:00:00Z"},
		{"overlap: second", []string{"Mon 10:00-12:00 UTC", "Mon 11:00-14:00 UTC"}, "2027-01-04T12:30:00Z", "2027-01-04T12:30:00Z", "2027-01-04T14:00:00Z"},
		{"adjacent not merged", []string{"Mon 10:00-12:00 UTC", "Mon 12:00-14:00 UTC"}, "2027-01-04T11:00:00Z", "2027-01-04T11:00:00Z", "2027-01-04T12:00:00Z"},
		{"two zones: Tokyo", []string{"Mon 09:00-10:00 America/New_York", "Mon 09:00-10:00 Asia/Tokyo"}, "2027-01-04T00:00:00Z", "2027-01-04T00:00:00Z", "2027-01-04T01:00:00Z"},
		{"two zones: New York", []string{"Mon 09:00-10:00 America/New_York", "Mon 09:00-10:00 Asia/Tokyo"}, "2027-01-04T01:00:00Z", "2027-01-04T14:00:00Z", "2027-01-04T15:00:00Z"},
		{"zone moves the weekday", []string{"Mon 00:00-02:00 Asia/Tokyo"}, "2027-01-03T16:00:00Z", "2027-01-03T16:00:00Z", "2027-01-03T17:00:00Z"},
		{"t in another zone", []string{"Mon 02:00-05:00 UTC"}, "2027-01-04T04:00:00+02:00", "2027-01-04T04:00:00+02:00", "2027-01-04T05:00:00Z"},
		{"half-hour zone", []string{"Mon 02:00-05:00 Asia/Kolkata"}, "2027-01-03T20:00:00Z", "2027-01-03T20:30:00Z", "2027-01-03T23:30:00Z"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ws := mustParseAll(t, tt.windows...)
			at, wantStart, wantEnd := ts(t, tt.at), ts(t, tt.start), ts(t, tt.end)
			if got, want := ws.Contains(at), wantStart.Equal(at); got != want {
				t.Errorf("Contains(%v) = %v, want %v", at, got, want)
			}
			start, end, ok := ws.Next(at)
			if !ok || !start.Equal(wantStart) || !end.Equal(wantEnd) {
				t.Errorf("Next(%v) = %v, %v, %v; want %v, %v", at, start, end, ok, wantStart, wantEnd)
			}
		})
	}
}

func TestEmptySet(t *testing.T) {
	now := ts(t, "2027-01-04T03:00:00Z")
	for _, ws := range []Windows{nil, {}} {
		if !ws.Contains(now) {
			t.Errorf("%#v.Contains = false, want true", ws)
		}
		start, end, ok := ws.Next(now)
		if !ok || !start.Equal(now) || !end.IsZero() {
			t.Errorf("%#v.Next = %v, %v, %v; want now, zero, true", ws, start, end, ok)
		}
	}
	// The zero Window never opens.
	ws := Windows{{}}
	if ws.Contains(now) {
		t.Error("zero Window contains now")
	}
	if _, _, ok := ws.Next(now); ok {
		t.Error("zero Window opens")
	}
}

// Europe/Amsterdam in 2027: on Sunday 03-28 the clock goes from 02:00 CET to
// 03:00 CEST at 01:00Z; on Sunday 10-31 from 03:00 CEST back to 02:00 CET at
// 01:00Z.
func TestDST(t *testing.T) {
	tests := []struct {
		name       string
		window     string
		at         string
		start, end string
	}{
		// Spring forward: 02:00-02:59 does not exist.
		{"spring: start in gap", "Sun 02:00-05:00 Europe/Amsterdam", "2027-03-28T00:30:00Z", "2027-03-28T03:00:00+02:00", "2027-03-28T05:00:00+02:00"},
		{"spring: start mid-gap", "Sun 02:30-04:00 Europe/Amsterdam", "2027-03-28T00:30:00Z", "2027-03-28T03:00:00+02:00", "2027-03-28T04:00:00+02:00"},
		{"spring: end in gap", "Sun 01:00-02:30 Europe/Amsterdam", "2027-03-28T01:00:00+01:00", "2027-03-28T01:00:00+01:00", "2027-03-28T03:00:00+02:00"},
		{"spring: last instant", "Sun 01:00-02:30 Europe/Amsterdam", "2027-03-28T01:59:59.999999999+01:00", "2027-03-28T01:59:59.999999999+01:00", "2027-03-28T03:00:00+02:00"},
		{"spring: emptied", "Sun 02:00-02:30 Europe/Amsterdam", "2027-03-28T00:00:00Z", "2027-04-04T02:00:00+02:00", "2027-04-04T02:30:00+02:00"},
		{"spring: night", "Sat 22:00-06:00 Europe/Amsterdam", "2027-03-27T12:00:00Z", "2027-03-27T22:00:00+01:00", "2027-03-28T06:00:00+02:00"},
		{"spring: 23-hour day", "daily 00:00-24:00 Europe/Amsterdam", "2027-03-28T00:00:00+01:00", "2027-03-28T00:00:00+01:00", "2027-03-29T00:00:00+02:00"},
		{"spring: after", "Sun 02:00-05:00 Europe/Amsterdam", "2027-03-28T03:00:00Z", "2027-04-04T02:00:00+02:00", "2027-04-04T05:00:00+02:00"},

		// Fall back: 02:00-02:59 happens twice; the first (CEST) counts.
		{"fall: first 02:00", "Sun 02:00-05:00 Europe/Amsterdam", "2027-10-30T23:00:00Z", "2027-10-31T02:00:00+02:00", "2027-10-31T05:00:00+01:00"},
		{"fall: inside twice", "Sun 02:00-05:00 Europe/Amsterdam", "2027-10-31T02:30:00+01:00", "2027-10-31T02:30:00+01:00", "2027-10-31T05:00:00+01:00"},
		{"fall: start and end ambiguous", "Sun 02:30-02:45 Europe/Amsterdam", "2027-10-30T23:00:00Z", "2027-10-31T02:30:00+02:00", "2027-10-31T02:45:00+02:00"},
		{"fall: end after", "Sun 02:30-03:30 Europe/Amsterdam", "2027-10-30T23:00:00Z", "2027-10-31T02:30:00+02:00", "2027-10-31T03:30:00+01:00"},
		{"fall: end ambiguous", "Sun 01:00-02:30 Europe/Amsterdam", "2027-10-31T02:10:00+02:00", "2027-10-31T02:10:00+02:00", "2027-10-31T02:30:00+02:00"},
		{"fall: second pass outside", "Sun 01:00-02:30 Europe/Amsterdam", "2027-10-31T02:10:00+01:00", "2027-11-07T01:00:00+01:00", "2027-11-07T02:30:00+01:00"},
		{"fall: night", "Sat 22:00-06:00 Europe/Amsterdam", "2027-10-30T12:00:00Z", "2027-10-30T22:00:00+02:00", "2027-10-31T06:00:00+01:00"},
		{"fall: 25-hour day", "daily 00:00-24:00 Europe/Amsterdam", "2027-10-31T12:00:00+01:00", "2027-10-31T12:00:00+01:00", "2027-11-01T00:00:00+01:00"},

		// Pacific/Apia skipped Friday 2011-12-30 entirely.
		{"skipped day", "Fri 02:00-05:00 Pacific/Apia", "2011-12-24T00:00:00Z", "2012-01-06T02:00:00+14:00", "2012-01-06T05:00:00+14:00"},
		{"skipped day: night", "Thu 22:00-06:00 Pacific/Apia", "2011-12-29T12:00:00Z", "2011-12-29T22:00:00-10:00", "2011-12-31T00:00:00+14:00"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ws := mustParseAll(t, tt.window)
			at, wantStart, wantEnd := ts(t, tt.at), ts(t, tt.start), ts(t, tt.end)
			if got, want := ws.Contains(at), wantStart.Equal(at); got != want {
				t.Errorf("Contains(%v) = %v, want %v", at, got, want)
			}
			start, end, ok := ws.Next(at)
			if !ok || !start.Equal(wantStart) || !end.Equal(wantEnd) {
				t.Errorf("Next(%v) = %v, %v, %v; want %v, %v", at, start, end, ok, wantStart, wantEnd)
			}
			if !ws.Contains(wantStart) || !ws.Contains(wantEnd.Add(-time.Nanosecond)) {
				t.Errorf("Contains does not agree with the occurrence [%v, %v)", wantStart, wantEnd)
			}
		})
	}
}

// zones for random windows: fixed offsets, DST in both hemispheres, a
// 30-minute DST shift (Lord Howe) and a DST change at midnight (Havana).
var testZones = []string{"UTC", "Asia/Kolkata", "Europe/Amsterdam", "America/New_York", "Australia/Lord_Howe", "America/Havana", "America/Santiago"}

func randomWindow(r *rand.Rand) string {
	var days []string
	for d := range 7 {
		if r.IntN(3) == 0 {
			days = append(days, abbrev(d))
		}
	}
	if len(days) == 0 {
		days = append(days, abbrev(r.IntN(7)))
	}
	start := r.IntN(day/15) * 15
	end := (start + 15 + r.IntN(day/15-1)*15) % day
	if r.IntN(10) == 0 {
		start, end = 0, day
	}
	if r.IntN(4) == 0 { // times near DST changes, which are often at 00:00-03:00
		start = r.IntN(4*60/15) * 15
	}
	if start == end {
		end = (start + 60) % day
	}
	return fmt.Sprintf("%s %02d:%02d-%02d:%02d %s", strings.Join(days, ","),
		start/60, start%60, end/60, end%60, testZones[r.IntN(len(testZones))])
}

// naiveContains is an independent model of Contains, right wherever the
// zone's offset does not change near t.
func naiveContains(ws Windows, t time.Time) bool {
	for _, w := range ws {
		l := t.In(w.loc)
		m := l.Hour()*60 + l.Minute()
		today := w.days&(1<<l.Weekday()) != 0
		yesterday := w.days&(1<<((l.Weekday()+6)%7)) != 0
		if w.end > w.start && today && m >= w.start && m < w.end ||
			w.end < w.start && (today && m >= w.start || yesterday && m < w.end) {
			return true
		}
	}
	return false
}

// stableOffset reports whether every window's zone keeps one offset within
// a day of t.
func stableOffset(ws Windows, t time.Time) bool {
	for _, w := range ws {
		_, a := t.Add(-48 * time.Hour).In(w.loc).Zone()
		_, b := t.Add(48 * time.Hour).In(w.loc).Zone()
		zs, ze := t.In(w.loc).ZoneBounds()
		if a != b || !zs.IsZero() && t.Sub(zs) < 48*time.Hour || !ze.IsZero() && ze.Sub(t) < 48*time.Hour {
			return false
		}
	}
	return true
}

func TestNextProperties(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	base := ts(t, "2026-01-01T00:00:00Z")
	span := 3 * 365 * 24 * time.Hour
	iterations, scan := 400, 36*time.Hour
	if testing.Short() {
		iterations = 50
	}
	for i := range iterations {
		var ss []string
		for range 1 + r.IntN(3) {
			ss = append(ss, randomWindow(r))
		}
		ws := mustParseAll(t, ss...)
		at := base.Add(time.Duration(r.Int64N(int64(span))))
		if i%2 == 0 { // near a clock change of the first window's zone
			if _, ze := at.In(ws[0].loc).ZoneBounds(); !ze.IsZero() {
				at = ze.Add(time.Duration(r.Int64N(int64(96*time.Hour))) - 48*time.Hour)
			}
		}
		if r.IntN(3) == 0 {
			at = at.Truncate(time.Minute) // exactly on window edges more often
		}
		start, end, ok := ws.Next(at)
		desc := fmt.Sprintf("%q at %v", ss, at)
		switch {
		case !ok:
			t.Fatalf("%s: no next window", desc)
		case start.Before(at):
			t.Fatalf("%s: Next = %v, before t", desc, start)
		case !end.After(start):
			t.Fatalf("%s: Next = %v, %v: empty", desc, start, end)
		case !ws.Contains(start) || !ws.Contains(end.Add(-time.Nanosecond)) || !ws.Contains(start.Add(end.Sub(start)/2)):
			t.Fatalf("%s: Next = %v, %v: not inside", desc, start, end)
		case ws.Contains(at) != start.Equal(at):
			t.Fatalf("%s: Contains = %v, Next = %v", desc, ws.Contains(at), start)
		case start.After(at) && ws.Contains(start.Add(-time.Nanosecond)):
			t.Fatalf("%s: Next = %v, but the instant before is inside", desc, start)
		}
		for u := at; u.Before(start) && u.Sub(at) < scan; u = u.Add(time.Minute) {
			if ws.Contains(u) {
				t.Fatalf("%s: Next = %v, but %v is inside", desc, start, u)
			}
		}
		for _, u := range []time.Time{at, start, end, start.Add(-time.Minute)} {
			if stableOffset(ws, u) && naiveContains(ws, u) != ws.Contains(u) {
				t.Fatalf("%s: Contains(%v) = %v, model says %v", desc, u, ws.Contains(u), naiveContains(ws, u))
			}
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"Mon-Fri 02:00-05:00 Europe/Amsterdam", "Sat,Sun 22:00-06:00 UTC", "Mon-Sun 00:00-24:00 UTC",
		"daily 01:00-03:30 Europe/Amsterdam", "fri-MON 12:00-00:00 America/New_York", "Wed,Fri-Mon 23:59-00:01 Pacific/Apia",
		"Mon-Fri 2-5", "Mon 24:00-24:00 UTC", "Mon 02:00-02:00 Australia/Lord_Howe", "", "Mon,,Tue", "Mon 02:00-05:00 Local",
	} {
		f.Add(s)
	}
	at := time.Date(2027, 10, 31, 0, 30, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, s string) {
		w, err := Parse(s)
		if err != nil {
			if msg := err.Error(); strings.Contains(msg, "\n") || !strings.HasPrefix(msg, "window ") {
				t.Fatalf("Parse(%q): error %q: want one line starting with window", s, msg)
			}
			return
		}
		back, err := Parse(w.String())
		if err != nil || !back.Equal(w) || back.String() != w.String() {
			t.Fatalf("Parse(%q) = %v; Parse(%q) = %v, %v", s, w, w.String(), back, err)
		}
		start, end, ok := Windows{w}.Next(at)
		if !ok || start.Before(at) || !end.After(start) || !(Windows{w}).Contains(start) {
			t.Fatalf("%v: Next(%v) = %v, %v, %v", w, at, start, end, ok)
		}
	})
}
