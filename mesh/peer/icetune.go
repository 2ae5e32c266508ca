package peer

import (
	"reflect"
	"time"
	"unsafe"

	"github.com/pion/ice/v4"
	"github.com/pion/webrtc/v4"
)

// iceCheckInterval replaces pion's 200 ms connectivity-check tick while a
// connection comes up. A parent offers, so its pion agent is the
// controlling one, and pion nominates a pair that succeeded only on its next
// tick (or when another candidate or check happens to arrive): a browser
// child then sat ICE-connected for up to 200 ms before DTLS could start, on
// about one join in ten. The tick only runs while checking; once connected
// pion's keepalive interval applies.
const iceCheckInterval = 10 * time.Millisecond

// setICECheckInterval sets the check interval of pc's ICE agent, which pion
// creates in SetLocalDescription and does not let an API user configure
// (ice.WithCheckInterval is refused once the agent exists). It must be
// called after SetLocalDescription and before the remote description is
// applied, when the agent's check loop has not started. It reaches into
// pion's unexported fields (pinned versions; TestSetICECheckInterval fails
// if an upgrade moves them) and reports false, changing nothing, if the
// fields are not where it expects.
func setICECheckInterval(pc *webrtc.PeerConnection, d time.Duration) bool {
	g := field(reflect.ValueOf(pc).Elem(), "iceGatherer", reflect.TypeFor[*webrtc.ICEGatherer]())
	if !g.IsValid() || g.IsNil() {
		return false
	}
	a := field(g.Elem(), "agent", reflect.TypeFor[*ice.Agent]())
	if !a.IsValid() || a.IsNil() {
		return false
	}
	ci := field(a.Elem(), "checkInterval", reflect.TypeFor[time.Duration]())
	if !ci.IsValid() {
		return false
	}
	ci.SetInt(int64(d))
	return true
}

// field returns struct v's field name, settable, if it has type t.
func field(v reflect.Value, name string, t reflect.Type) reflect.Value {
	f := v.FieldByName(name)
	if !f.IsValid() || f.Type() != t || !f.CanAddr() {
		return reflect.Value{}
	}
	return reflect.NewAt(t, unsafe.Pointer(f.UnsafeAddr())).Elem()
}
