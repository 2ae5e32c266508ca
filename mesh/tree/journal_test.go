package tree

import (
	"fmt"
	"reflect"
	"slices"
	"testing"
)

// TestJournalKeepsACopy: a copy of the tree kept from the journal alone
// (after each random operation, the rows Touched names, from Info) equals
// the tree's Snapshot, depths and children derived by Depths.
func TestJournalKeepsACopy(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		pop  int
	}{
		{"default", Config{}, 300},
		{"tight", Config{SourceCapacity: 2, BrowserMaxCapacity: 3, GoMaxCapacity: 4, MaxBrowserHops: 1}, 120},
		{"prove", Config{Prove: true}, 300},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSim(t, tc.cfg, 3)
			s.tr.Journal(true)
			if _, err := s.tr.SetSource("src0", 0); err != nil {
				t.Fatal(err)
			}
			copyOf := make(map[string]NodeInfo)
			touched := 0
			const ops = 6000
			for i := range ops {
				what := s.step(tc.pop)
				ids := s.tr.Touched()
				touched += len(ids)
				for _, id := range ids {
					if info, ok := s.tr.Info(id); ok {
						copyOf[id] = info
					} else {
						delete(copyOf, id)
					}
				}
				if i%3 != 0 {
					continue
				}
				rows := make([]NodeInfo, 0, len(copyOf))
				for _, r := range copyOf {
					rows = append(rows, r)
				}
				slices.SortFunc(rows, func(a, b NodeInfo) int { return cmpString(a.ID, b.ID) })
				Depths(rows)
				want := s.tr.Snapshot()
				for i := range want {
					want[i].Hops = 0
				}
				for i := range rows {
					rows[i].Hops = 0
					rows[i].Unverified = false
				}
				for i := range want {
					want[i].Unverified = false
				}
				if !reflect.DeepEqual(rows, want) {
					t.Fatalf("after op %d (%s): the copy differs:\n%s", i, what, diffRows(rows, want))
				}
			}
			t.Logf("%d ops: %d rows recorded (%.1f per op), %d nodes", ops, touched, float64(touched)/ops, s.tr.Len())
		})
	}
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func diffRows(got, want []NodeInfo) string {
	g := make(map[string]NodeInfo)
	for _, r := range got {
		g[r.ID] = r
	}
	out := ""
	for _, w := range want {
		if r, ok := g[w.ID]; !ok || !reflect.DeepEqual(r, w) {
			out += "got  " + fmtRow(r) + "\nwant " + fmtRow(w) + "\n"
		}
		delete(g, w.ID)
	}
	for _, r := range g {
		out += "extra " + fmtRow(r) + "\n"
	}
	return out
}

func fmtRow(r NodeInfo) string { return reflectString(r) }

func reflectString(v any) string { return fmt.Sprintf("%+v", v) }
