package exporter

import "github.com/tlsactl/tlsactl/internal/check"

// forecast returns the days until DANE breaks at an address (no record that
// matches now matches any more; 0 when none matches now) and until only one
// record still matches, from the check's forecast. Either is nil when the
// check foresees no such moment (a 3 x x record does not stop matching on
// its own; at most one record matches already): that series is then absent.
func forecast(a check.AddressReport) (breakDays, singleDays *float64) {
	if a.Forecast == nil {
		return nil, nil
	}
	return a.Forecast.BreakDays, a.Forecast.SingleDays
}
