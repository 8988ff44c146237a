package schedule_test

import (
	"fmt"
	"log"
	"time"
	_ "time/tzdata" // Europe/Amsterdam even where the system has no zone database

	"github.com/tlsactl/tlsactl/rollover/schedule"
)

// Parse a deploy window and find when it next opens after a given time.
func Example() {
	w, err := schedule.Parse("mon-fri 02:00-05:00 Europe/Amsterdam")
	if err != nil {
		log.Fatal(err)
	}
	ws := schedule.Windows{w}
	fmt.Println("window:", w)

	// Friday 2030-03-01 10:00 UTC: outside the window; the next occurrence
	// is on Monday.
	t := time.Date(2030, 3, 1, 10, 0, 0, 0, time.UTC)
	start, end, ok := ws.Next(t)
	fmt.Println("open now:", ws.Contains(t))
	fmt.Println("next:", start.Format(time.RFC3339), "to", end.Format(time.RFC3339), ok)
	// Output:
	// window: Mon-Fri 02:00-05:00 Europe/Amsterdam
	// open now: false
	// next: 2030-03-04T02:00:00+01:00 to 2030-03-04T05:00:00+01:00 true
}
