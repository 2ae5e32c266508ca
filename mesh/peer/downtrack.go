package peer

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v4"
)

// downTrack is the webrtc.TrackLocal a Downstream adds for one Forwarder: one
// per child, so each Bind creates that child's queue and writer.
type downTrack struct {
	fwd    *Forwarder
	batch  *batchNet    // the connection's sockets; nil: unbatched
	direct *atomic.Bool // the connection's path is one of those sockets; nil: assume so
	// ready is closed when the connection is up (nil: it is already). Until
	// then pion drops whatever is written (its SRTP writer returns 0, nil
	// before DTLS completes), so the child joins the Forwarder, and is handed
	// the cached GOP, only then. gone is closed if the connection ends first.
	ready, gone <-chan struct{}
	// hold, if set, keeps the child off the Forwarder until it is closed:
	// a standby link is up (ICE, DTLS) but carries no media until promoted
	// (standby.go).
	hold <-chan struct{}
	// strip, if set, takes signature trailers off what this child gets
	// (strip.go).
	strip func() bool

	mu     sync.Mutex
	writer *childWriter
	closed bool

	rr rrState // the child's reception reports of this track (linkstats.go)
}

var _ webrtc.TrackLocal = (*downTrack)(nil)

func newDownTrack(f *Forwarder, batch *batchNet, direct *atomic.Bool, ready, gone <-chan struct{}) *downTrack {
	return &downTrack{fwd: f, batch: batch, direct: direct, ready: ready, gone: gone}
}

// Bind records the negotiated SSRC, payload type and WriteStream and starts
// the child's writer.
func (d *downTrack) Bind(ctx webrtc.TrackLocalContext) (webrtc.RTPCodecParameters, error) {
	codec := bestCodec(d.fwd.codec, ctx.CodecParameters())
	if codec == nil {
		return webrtc.RTPCodecParameters{}, ErrUnsupportedCodec
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return webrtc.RTPCodecParameters{}, ErrClosed
	}
	if d.writer != nil {
		return webrtc.RTPCodecParameters{}, ErrAlreadyBound
	}
	f := d.fwd
	if f.isClosed() {
		return webrtc.RTPCodecParameters{}, ErrClosed
	}
	w := newChildWriter(uint32(ctx.SSRC()), uint8(codec.PayloadType), d.writeStream(ctx), f.slots)
	w.extID = captureExtID(ctx.HeaderExtensions())
	w.burstRate, w.keepTS = float64(f.opts.BurstRate)/8, f.opts.KeepBurstTimestamps
	w.out, w.direct = d.batch, d.direct
	d.writer = w
	// pion binds when the answer is applied, before ICE and DTLS: ask for a
	// keyframe now if the cache cannot serve this child, so it is on its way
	// while the connection comes up.
	if f.isKeyframe != nil && !f.gopReady.Load() && d.hold == nil {
		f.requestKeyframe()
	}
	if d.ready == nil && d.hold == nil {
		if err := f.attach(w); err != nil {
			d.writer = nil
			return webrtc.RTPCodecParameters{}, err
		}
		go w.run(f, func() bool { return true })
		return *codec, nil
	}
	ready, gone, hold := d.ready, d.gone, d.hold
	go w.run(f, func() bool {
		for _, c := range []<-chan struct{}{ready, hold} {
			if c == nil {
				continue
			}
			select {
			case <-c:
			case <-gone:
				return false
			case <-w.stopCh:
				return false
			}
		}
		return f.attach(w) == nil
	})
	return *codec, nil
}

// Unbind detaches the child from the Forwarder and stops its writer; close
// waits for it.
func (d *downTrack) Unbind(webrtc.TrackLocalContext) error {
	d.mu.Lock()
	w := d.writer
	d.mu.Unlock()
	if w != nil {
		d.fwd.detach(w)
	}
	return nil
}

// onNACK passes a child's NACK to its writer.
func (d *downTrack) onNACK(n *rtcp.TransportLayerNack) {
	d.mu.Lock()
	w := d.writer
	d.mu.Unlock()
	if w != nil {
		w.queueNACK(n.Nacks)
	}
}

// onReport records the child's reception report of this track.
func (d *downTrack) onReport(rr *rtcp.ReceiverReport, now time.Time) {
	d.mu.Lock()
	w := d.writer
	d.mu.Unlock()
	if w != nil {
		d.rr.onReport(rr, w.ssrc, now)
	}
}

// close detaches for good and waits for the writer goroutine.
func (d *downTrack) close() {
	d.mu.Lock()
	d.closed = true
	w := d.writer
	d.mu.Unlock()
	if w != nil {
		d.fwd.detach(w)
		<-w.done
	}
}

// ID is the protocol track id, which the child maps back to protocol.Track.
func (d *downTrack) ID() string { return d.fwd.track.ID }

// RID is empty: Canopy does not simulcast.
func (d *downTrack) RID() string { return "" }

// StreamID groups a stream's tracks into one MediaStream.
func (d *downTrack) StreamID() string { return StreamID }

// Kind is the track's media kind.
func (d *downTrack) Kind() webrtc.RTPCodecType { return d.fwd.kind }
