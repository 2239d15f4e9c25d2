package auth

import (
	"fmt"
	"testing"
	"time"
)

func TestRateLimiterWindow(t *testing.T) {
	clk := &clock{t: time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)}
	t0 := clk.Now()
	l := NewRateLimiter(3, 5*time.Minute, clk.Now)
	if l.Limit() != 3 || l.Window() != 5*time.Minute {
		t.Fatalf("Limit, Window = %d, %v", l.Limit(), l.Window())
	}
	steps := []struct {
		advance   time.Duration
		key       string
		ok        bool
		remaining int
		reset     time.Time
	}{
		{0, "a", true, 2, t0.Add(5 * time.Minute)},
		{time.Minute, "a", true, 1, t0.Add(5 * time.Minute)},
		{time.Minute, "a", true, 0, t0.Add(5 * time.Minute)},
		{time.Minute, "a", false, 0, t0.Add(5 * time.Minute)},
		{0, "b", true, 2, t0.Add(8 * time.Minute)}, // keys are independent
		{0, "a", false, 0, t0.Add(5 * time.Minute)},
		{2*time.Minute - time.Second, "a", false, 0, t0.Add(5 * time.Minute)},
		{time.Second, "a", true, 2, t0.Add(10 * time.Minute)}, // a new window at t0+5m
		{0, "b", true, 1, t0.Add(8 * time.Minute)},
		{3 * time.Minute, "b", true, 2, t0.Add(13 * time.Minute)},
	}
	for i, st := range steps {
		clk.Add(st.advance)
		ok, remaining, reset := l.Allow(st.key)
		if ok != st.ok || remaining != st.remaining || !reset.Equal(st.reset) {
			t.Errorf("step %d (%s at +%v): Allow = %v, %d, +%v; want %v, %d, +%v", i, st.key, clk.Now().Sub(t0),
				ok, remaining, reset.Sub(t0), st.ok, st.remaining, st.reset.Sub(t0))
		}
	}
}

func TestRateLimiterKeyCap(t *testing.T) {
	clk := &clock{t: time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)}
	l := NewRateLimiter(1, time.Minute, clk.Now)
	for i := range RateLimiterMaxKeys + 500 {
		if ok, _, _ := l.Allow(fmt.Sprint("ip", i)); !ok {
			t.Fatalf("new key %d refused", i)
		}
	}
	if n := len(l.entries); n != RateLimiterMaxKeys || l.order.Len() != n {
		t.Fatalf("tracking %d keys (list %d), want %d", n, l.order.Len(), RateLimiterMaxKeys)
	}
	// The oldest keys were dropped, the newest are still counted.
	if ok, _, _ := l.Allow("ip0"); !ok {
		t.Error("evicted key still limited")
	}
	if ok, _, _ := l.Allow(fmt.Sprint("ip", RateLimiterMaxKeys+499)); ok {
		t.Error("newest key not limited")
	}
	// Expired keys are dropped as time passes.
	clk.Add(time.Minute)
	l.Allow("late")
	if n := len(l.entries); n != 1 {
		t.Errorf("after the window: tracking %d keys, want 1", n)
	}
}

func TestRateLimiterClockBackwards(t *testing.T) {
	clk := &clock{t: time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)}
	l := NewRateLimiter(1, time.Minute, clk.Now)
	l.Allow("a")
	clk.Add(-time.Hour)
	l.Allow("b")
	clk.Add(time.Hour + time.Minute)
	// a expired (not at the front in window order after the jump): a new window.
	if ok, _, _ := l.Allow("a"); !ok {
		t.Error("expired key still limited")
	}
}
