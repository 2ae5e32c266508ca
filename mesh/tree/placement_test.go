package tree

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"canopy/mesh/protocol"
)

const (
	goK  = protocol.KindGo
	brK  = protocol.KindBrowser
	rel  = protocol.RoleRelay
	view = protocol.RoleViewer
)

type joinSpec struct {
	id   string
	kind Kind
	cap  int
}

func build(t *testing.T, cfg Config, srcCap int, joins ...joinSpec) *Tree {
	t.Helper()
	tr := New(cfg)
	if srcCap > 0 {
		if _, err := tr.SetSource("src", srcCap); err != nil {
			t.Fatal(err)
		}
	}
	for _, j := range joins {
		role := view
		if j.kind == goK && j.cap > 0 {
			role = rel
		}
		if _, err := tr.Join(j.id, role, j.kind, j.cap); err != nil {
			t.Fatalf("join %s: %v", j.id, err)
		}
		if err := tr.Check(); err != nil {
			t.Fatalf("after join %s: %v", j.id, err)
		}
	}
	return tr
}

// layout renders "id@depth<parent" for the listed ids.
func layout(tr *Tree, ids ...string) string {
	var parts []string
	for _, id := range ids {
		p, ok := tr.Parent(id)
		switch {
		case !ok && tr.Queued(id):
			parts = append(parts, id+"=queued")
		case !ok:
			parts = append(parts, id+"=gone")
		default:
			parts = append(parts, fmt.Sprintf("%s@%d<%s", id, tr.Depth(id), p))
		}
	}
	return strings.Join(parts, " ")
}

func TestPlacement(t *testing.T) {
	for _, tc := range []struct {
		name   string
		cfg    Config
		srcCap int
		joins  []joinSpec
		ids    []string
		want   string
	}{
		{
			name: "shallowest slot first", srcCap: 2,
			joins: []joinSpec{{"a", goK, 2}, {"b", goK, 2}, {"c", brK, 0}, {"d", brK, 0}, {"e", brK, 0}},
			ids:   []string{"a", "b", "c", "d", "e"},
			want:  "a@1<src b@1<src c@2<a d@2<a e@2<b",
		},
		{
			name: "late Go relay takes a browser's place", srcCap: 2,
			joins: []joinSpec{{"b1", brK, 2}, {"b2", brK, 2}, {"r", goK, 8}},
			ids:   []string{"r", "b1", "b2"},
			want:  "r@1<src b1@1<src b2@2<r",
		},
		{
			name: "relay never below a browser", srcCap: 1,
			joins: []joinSpec{{"b", brK, 2}, {"x", brK, 0}, {"r", goK, 1}},
			ids:   []string{"r", "b", "x"},
			want:  "r@1<src b@2<r x@3<b",
		},
		{
			name: "browser hops bounded", cfg: Config{MaxBrowserHops: 1}, srcCap: 1,
			joins: []joinSpec{{"b1", brK, 2}, {"b2", brK, 2}, {"b3", brK, 2}, {"b4", brK, 2}},
			ids:   []string{"b1", "b2", "b3", "b4"},
			want:  "b1@1<src b2@2<b1 b3@2<b1 b4=queued",
		},
		{
			name: "capacity clamped", srcCap: 1,
			joins: []joinSpec{{"b", brK, 50}, {"x", brK, 0}, {"y", brK, 0}, {"z", brK, 0}},
			ids:   []string{"b", "x", "y", "z"},
			want:  "b@1<src x@2<b y@2<b z=queued",
		},
		{
			name: "browser that relays displaces a leaf", srcCap: 1,
			joins: []joinSpec{{"leaf", brK, 0}, {"b", brK, 2}},
			ids:   []string{"b", "leaf"},
			want:  "b@1<src leaf@2<b",
		},
		{
			name: "go viewer may sit below a browser", srcCap: 1,
			joins: []joinSpec{{"b", brK, 1}, {"w", goK, 0}},
			ids:   []string{"b", "w"},
			want:  "b@1<src w@2<b",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := build(t, tc.cfg, tc.srcCap, tc.joins...)
			if got := layout(tr, tc.ids...); got != tc.want {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}

func TestErrors(t *testing.T) {
	tr := build(t, Config{}, 2, joinSpec{"a", brK, 1})
	for _, tc := range []struct {
		name string
		err  error
		want error
	}{
		{"duplicate", second(tr.Join("a", view, brK, 0)), ErrExists},
		{"source id taken", second(tr.Join("src", view, brK, 0)), ErrExists},
		{"bad id", second(tr.Join("a b", view, brK, 0)), ErrInvalid},
		{"empty id", second(tr.Join("", view, brK, 0)), ErrInvalid},
		{"source role", second(tr.Join("s2", protocol.RoleSource, goK, 1)), ErrInvalid},
		{"bad kind", second(tr.Join("k", view, "tv", 1)), ErrInvalid},
		{"negative capacity", second(tr.Join("c", view, brK, -1)), ErrInvalid},
		{"second source", second(tr.SetSource("s2", 1)), ErrSourcePresent},
		{"capacity of unknown", second(tr.SetCapacity("nope", 1)), ErrUnknown},
		{"negative capacity update", second(tr.SetCapacity("a", -3)), ErrInvalid},
	} {
		if !errors.Is(tc.err, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, tc.err, tc.want)
		}
	}
	if ch := tr.Leave("nope"); ch != nil {
		t.Errorf("leave unknown: %v", ch)
	}
	if err := tr.Check(); err != nil {
		t.Fatal(err)
	}
}

func second[T any](_ T, err error) error { return err }

func TestQueueDrainsWhenRoomFrees(t *testing.T) {
	tr := build(t, Config{}, 1, joinSpec{"a", brK, 0}, joinSpec{"b", brK, 0})
	if !tr.Queued("b") || tr.Depth("b") != -1 {
		t.Fatalf("b should be queued: %s", layout(tr, "a", "b"))
	}
	ch := tr.Leave("a")
	if want := []Change{{Node: "b", To: "src"}}; !slices.Equal(ch, want) {
		t.Fatalf("changes %v, want %v", ch, want)
	}
	// A relay arriving adds room: the queued viewers are placed below it.
	tr = build(t, Config{}, 1, joinSpec{"a", brK, 0}, joinSpec{"b", brK, 0}, joinSpec{"c", brK, 0})
	ch, _ = tr.Join("r", rel, goK, 4)
	want := []Change{{"r", "", "src"}, {"a", "src", "r"}, {"b", "", "r"}, {"c", "", "r"}}
	if !slices.Equal(ch, want) {
		t.Fatalf("changes %v, want %v", ch, want)
	}
	if err := tr.Check(); err != nil {
		t.Fatal(err)
	}
}

func TestSourceLeavesAndReturns(t *testing.T) {
	tr := build(t, Config{}, 2, joinSpec{"a", goK, 2}, joinSpec{"b", goK, 2}, joinSpec{"c", brK, 0})
	ch := tr.RemoveSource()
	want := []Change{{"a", "src", ""}, {"b", "src", ""}}
	if !slices.Equal(ch, want) {
		t.Fatalf("remove source: %v, want %v", ch, want)
	}
	if err := tr.Check(); err != nil {
		t.Fatal(err)
	}
	// The tree below stays; a newcomer still joins it.
	if _, err := tr.Join("d", view, brK, 0); err != nil {
		t.Fatal(err)
	}
	if got := layout(tr, "a", "c", "d"); got != "a@1< c@2<a d@2<a" {
		t.Fatalf("vacant: %s", got)
	}
	// A new source with less room: b has no slot, waits, and then, being a
	// relay, takes the place of a browser below a.
	ch, err := tr.SetSource("src2", 1)
	if err != nil {
		t.Fatal(err)
	}
	if want := []Change{{"a", "", "src2"}, {"b", "", "a"}, {"d", "a", "b"}}; !slices.Equal(ch, want) {
		t.Fatalf("set source: %v, want %v", ch, want)
	}
	if err := tr.Check(); err != nil {
		t.Fatal(err)
	}
}

func TestStandby(t *testing.T) {
	tr := build(t, Config{}, 1,
		joinSpec{"r", goK, 2}, joinSpec{"r1", goK, 3}, joinSpec{"r2", goK, 1}, joinSpec{"x", brK, 0})
	// src → r → {r1 → x?, r2}
	if got := layout(tr, "r", "r1", "r2", "x"); got != "r@1<src r1@2<r r2@2<r x@3<r1" {
		t.Fatalf("layout %s", got)
	}
	for id, want := range map[string]string{"r": "", "r1": "src", "r2": "r1", "x": "r"} {
		if got := tr.Standby(id); got != want {
			t.Errorf("Standby(%s) = %q, want %q", id, got, want)
		}
	}
	ch := tr.Leave("r")
	if want := []Change{{"r1", "r", "src"}, {"r2", "r", "r1"}}; !slices.Equal(ch, want) {
		t.Fatalf("leave: %v, want %v", ch, want)
	}
}

func TestSetCapacity(t *testing.T) {
	tr := build(t, Config{}, 1, joinSpec{"r", goK, 3}, joinSpec{"a", brK, 2}, joinSpec{"b", brK, 0}, joinSpec{"c", goK, 0})
	// Shrinking r sheds its lowest-ranked children into free slots below the others.
	if _, err := tr.SetCapacity("r", 1); err != nil {
		t.Fatal(err)
	}
	if err := tr.Check(); err != nil {
		t.Fatal(err)
	}
	if got := len(tr.Children("r")); got != 1 {
		t.Fatalf("r has %d children", got)
	}
	// A Go viewer below a browser that becomes a relay moves above browsers.
	tr = build(t, Config{}, 1, joinSpec{"a", brK, 2}, joinSpec{"w", goK, 0})
	if got := layout(tr, "w"); got != "w@2<a" {
		t.Fatalf("layout %s", got)
	}
	ch, err := tr.SetCapacity("w", 4)
	if err != nil {
		t.Fatal(err)
	}
	if got := layout(tr, "w", "a"); got != "w@1<src a@2<w" {
		t.Fatalf("after: %s (changes %v)", got, ch)
	}
	if err := tr.Check(); err != nil {
		t.Fatal(err)
	}
}

func TestSnapshotJSON(t *testing.T) {
	tr := build(t, Config{}, 1, joinSpec{"r", goK, 2}, joinSpec{"b", brK, 0}, joinSpec{"a", brK, 0}, joinSpec{"q", brK, 0})
	data, err := json.Marshal(tr.Snapshot())
	if err != nil {
		t.Fatal(err)
	}
	want := `[{"id":"a","parent":"r","role":"viewer","kind":"browser","capacity":0,"usable":0,"trust":"proven","depth":2,"hops":0,"children":[]},` +
		`{"id":"b","parent":"r","role":"viewer","kind":"browser","capacity":0,"usable":0,"trust":"proven","depth":2,"hops":0,"children":[]},` +
		`{"id":"q","parent":"","role":"viewer","kind":"browser","capacity":0,"usable":0,"trust":"proven","depth":-1,"hops":-1,"queued":true,"children":[]},` +
		`{"id":"r","parent":"src","role":"relay","kind":"go","capacity":2,"usable":2,"trust":"proven","depth":1,"hops":0,"children":["a","b"]},` +
		`{"id":"src","parent":"","role":"source","kind":"go","capacity":1,"usable":1,"trust":"proven","depth":0,"hops":0,"children":["r"]}]`
	if string(data) != want {
		t.Fatalf("got  %s\nwant %s", data, want)
	}
}
