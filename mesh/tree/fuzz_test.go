package tree

import (
	"fmt"
	"testing"
)

// FuzzOperations decodes the input as a sequence of operations on a small id
// space and checks every invariant after each, and that Standby predicts
// where Leave of the parent puts a child.
func FuzzOperations(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9})
	f.Add([]byte{0x10, 0x21, 0x32, 0x43, 0x54, 0x65, 0x76, 0x87, 0x98, 0xa9, 0x0b, 0x1c})
	f.Add([]byte("join join join leave crash capacity source"))
	f.Add([]byte{6, 0, 0, 8, 16, 24, 32, 40, 48, 56, 1, 9, 17, 25, 7, 0, 3, 3})
	f.Add(make([]byte, 64))
	f.Fuzz(runOps)
}

func runOps(t *testing.T, data []byte) {
	cfg := Config{}
	if len(data) > 0 {
		// The first byte picks a policy: tight ones exercise queues and evictions.
		b := data[0]
		cfg = Config{
			SourceCapacity:     1 + int(b%4),
			GoMaxCapacity:      1 + int(b>>2%4),
			BrowserMaxCapacity: int(b>>4%3) - 1 + boolInt(b>>4%3 == 1),
			MaxBrowserHops:     int(b >> 6),
			Prove:              len(data)%2 == 0,
		}
		data = data[1:]
	}
	tr := New(cfg)
	srcN := 0
	for i := 0; i+1 < len(data); i += 2 {
		op, arg := data[i], data[i+1]
		id := fmt.Sprintf("p%d", arg%24)
		switch op % 8 {
		case 0, 1, 2:
			kind, role := brK, view
			if op&0x80 != 0 {
				kind = goK
				if arg&0x40 != 0 {
					role = rel
				}
			}
			tr.Join(id, role, kind, int(op>>3%8))
		case 3:
			tr.Leave(id)
		case 4:
			if p, ok := tr.Parent(id); ok && p != "" && p != tr.Source() {
				want := map[string]string{}
				for _, c := range tr.Children(p) {
					want[c] = tr.Standby(c)
				}
				for _, c := range tr.Leave(p) {
					if w, ok := want[c.Node]; ok && c.From == p && c.To != w {
						t.Fatalf("standby of %s was %q, leave of %s gave %q", c.Node, w, p, c.To)
					}
				}
			}
		case 5:
			tr.SetCapacity(id, int(op>>3%8))
		case 6:
			if tr.Source() != "" {
				tr.RemoveSource()
			} else {
				srcN++
				tr.SetSource(fmt.Sprintf("s%d", srcN), int(arg%6))
			}
		case 7:
			if op&0x80 != 0 {
				tr.SetTrust(id, Trust(op>>3%5))
				break
			}
			if op&0x40 != 0 {
				tr.Reattach(id)
				break
			}
			tr.Standby(id)
			tr.Snapshot()
		}
		if err := tr.Check(); err != nil {
			t.Fatalf("op %d (%d,%d): %v", i/2, op, arg, err)
		}
	}
}
