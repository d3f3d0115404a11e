package promreg

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestRegisterShares(t *testing.T) {
	reg := prometheus.NewRegistry()
	opts := prometheus.CounterOpts{Name: "x_total", Help: "x"}
	a, err := Register(reg, prometheus.NewCounterVec(opts, []string{"protocol"}))
	if err != nil {
		t.Fatal(err)
	}
	b, err := Register(reg, prometheus.NewCounterVec(opts, []string{"protocol"}))
	if err != nil || b != a {
		t.Fatalf("second registration: %v, same collector %v", err, b == a)
	}
	if _, err := Register(reg, prometheus.NewGauge(prometheus.GaugeOpts{Name: "x_total", Help: "other"})); err == nil {
		t.Error("a different collector under the same name registered")
	}
}

func TestPanics(t *testing.T) {
	reg := prometheus.NewRegistry()
	a, err := Panics(reg, nil, "imap")
	if err != nil {
		t.Fatal(err)
	}
	b, err := Panics(reg, nil, "pop3")
	if err != nil {
		t.Fatal(err)
	}
	a.Inc()
	b.Add(2)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			got[mf.GetName()+"/"+m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
		}
	}
	if len(got) != 2 || got["lifeline_panics_total/imap"] != 1 || got["lifeline_panics_total/pop3"] != 2 {
		t.Errorf("gathered %v", got)
	}
	shared := prometheus.NewCounter(prometheus.CounterOpts{Name: "shared_total", Help: "x"})
	if c, err := Panics(reg, shared, "imap"); err != nil || c != shared {
		t.Errorf("a given counter is not used: %v", err)
	}
}
