package mesh

import (
	"testing"
	"time"
)

func TestBackoffDoublesJittersAndResets(t *testing.T) {
	var b Backoff
	want := []time.Duration{500, 1000, 2000, 4000, 8000, 10000, 10000}
	for i, w := range want {
		w *= time.Millisecond
		d := b.Next()
		if d > w || d < time.Duration(float64(w)*(1-DefaultBackoffJitter)) {
			t.Fatalf("retry %d: %v, want within [%v, %v]", i, d, time.Duration(float64(w)*(1-DefaultBackoffJitter)), w)
		}
	}
	for range 100 {
		if d := b.Next(); d > DefaultBackoffMax {
			t.Fatalf("%v past the cap", d)
		}
	}
	b.Reset()
	if d := b.Next(); d > DefaultBackoffBase {
		t.Fatalf("after Reset: %v, want at most %v", d, DefaultBackoffBase)
	}
}
