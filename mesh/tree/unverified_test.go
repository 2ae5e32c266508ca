package tree

import "testing"

// TestUnverifiedBelowReencodingBrowser: a node is unverified exactly when a
// browser above it re-encodes (its signatures cannot pass that hop); a
// pass-through browser carries them.
func TestUnverifiedBelowReencodingBrowser(t *testing.T) {
	tr := New(Config{MaxBrowserHops: 4})
	ids := chain(t, tr, 4, func(i int) bool { return i != 1 }) // b1 re-encodes
	want := map[string]bool{"src": false, ids[0]: false, ids[1]: false, ids[2]: true, ids[3]: true}
	for _, n := range tr.Snapshot() {
		if n.Unverified != want[n.ID] {
			t.Errorf("%s (hops %d): unverified %v, want %v", n.ID, n.Hops, n.Unverified, want[n.ID])
		}
		if n.Tampering {
			t.Errorf("%s: the tree never marks tampering", n.ID)
		}
	}
}
