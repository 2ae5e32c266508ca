package media

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/pion/rtp"
)

// ingestReadBuffer is the socket receive buffer an RTP listener asks for:
// an encoder writes a keyframe's packets back to back, and Linux's default
// (212992 B) holds only 92 of 1200 B. 4 MiB is a 1080p keyframe many times
// over; the kernel caps it at net.core.rmem_max.
const ingestReadBuffer = 4 << 20

// ErrNotRTP means a datagram was not an RTP packet of the expected stream;
// ReadRTP skips those, and reports the count in Stats.
var ErrNotRTP = errors.New("media: not an RTP packet of this stream")

// PacketSource is a live RTP stream for one track of a source: a UDP port an
// encoder sends to, or a publisher's WebRTC track (pion's TrackRemote has
// the same SetReadDeadline). A reader of it stops at a deadline rather than
// by closing it, so the source outlives one node and feeds the next.
type PacketSource interface {
	// ReadRTP fills p with the next packet; p's payload may point into a
	// buffer that the next call reuses.
	ReadRTP(p *rtp.Packet) error
	// Codec is the codec the packets carry.
	Codec() Codec
	// SetReadDeadline makes a blocked or later ReadRTP fail once t has
	// passed (with an error that is a net.Error timeout); zero: no deadline.
	SetReadDeadline(t time.Time) error
}

// RTPListenerStats counts what a listener received.
type RTPListenerStats struct {
	Packets uint64 // RTP packets of the stream
	Skipped uint64 // datagrams that were not (RTCP, another payload type, garbage)
	RTCP    uint64 // RTCP packets, on the port after the RTP port or muxed
}

// RTPListener receives one RTP stream on a UDP port, as ffmpeg's rtp muxer
// or a GStreamer udpsink sends it. It also binds the next port, where such
// senders put RTCP (RFC 3550 §11), and drains it: the sender reports carry
// nothing the tree needs, and receiver reports would not reach an encoder
// that does not listen for them. Keyframe requests cannot reach the encoder
// either; the tree's GOP cache starts new viewers without one.
type RTPListener struct {
	codec Codec
	pt    int // payload type to accept; -1: any
	conn  *net.UDPConn
	rtcp  *net.UDPConn // nil when the next port was taken
	buf   []byte

	packets, skipped, rtcpIn atomic.Uint64
}

// ListenRTP listens on addr (host:port) for RTP of codec c with payload type
// pt (negative: any payload type).
func ListenRTP(addr string, c Codec, pt int) (*RTPListener, error) {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("media: RTP address %q: %w", addr, err)
	}
	conn, err := net.ListenUDP("udp", ua)
	if err != nil {
		return nil, fmt.Errorf("media: listen for RTP: %w", err)
	}
	_ = conn.SetReadBuffer(ingestReadBuffer)
	l := &RTPListener{codec: c, pt: pt, conn: conn, buf: make([]byte, 1<<16)}
	local := conn.LocalAddr().(*net.UDPAddr)
	if rc, err := net.ListenUDP("udp", &net.UDPAddr{IP: local.IP, Port: local.Port + 1, Zone: local.Zone}); err == nil {
		l.rtcp = rc
		go l.drainRTCP()
	}
	return l, nil
}

// Addr is the address the listener receives RTP on.
func (l *RTPListener) Addr() *net.UDPAddr { return l.conn.LocalAddr().(*net.UDPAddr) }

// Codec is the codec of the stream.
func (l *RTPListener) Codec() Codec { return l.codec }

// Stats returns the listener's counters.
func (l *RTPListener) Stats() RTPListenerStats {
	return RTPListenerStats{Packets: l.packets.Load(), Skipped: l.skipped.Load(), RTCP: l.rtcpIn.Load()}
}

// ReadRTP waits for the next RTP packet of the stream, skipping anything
// else; it fails only when the socket does (net.ErrClosed after Close).
func (l *RTPListener) ReadRTP(p *rtp.Packet) error {
	for {
		n, _, err := l.conn.ReadFromUDP(l.buf)
		if err != nil {
			return err
		}
		if err := l.parse(p, l.buf[:n]); err != nil {
			l.skipped.Add(1)
			continue
		}
		l.packets.Add(1)
		return nil
	}
}

// parse accepts b as a packet of the stream: RTP version 2, not RTCP on a
// muxed port (RFC 5761 §4: packet types 192-223 in the second byte), the
// expected payload type, something in it.
func (l *RTPListener) parse(p *rtp.Packet, b []byte) error {
	if len(b) < 12 || b[0]>>6 != 2 {
		return ErrNotRTP
	}
	if b[1] >= 192 && b[1] <= 223 {
		l.rtcpIn.Add(1)
		return ErrNotRTP
	}
	if err := p.Unmarshal(b); err != nil {
		return fmt.Errorf("%w: %v", ErrNotRTP, err)
	}
	if (l.pt >= 0 && int(p.PayloadType) != l.pt) || len(p.Payload) == 0 {
		return ErrNotRTP
	}
	return nil
}

func (l *RTPListener) drainRTCP() {
	buf := make([]byte, 1500)
	for {
		if _, _, err := l.rtcp.ReadFromUDP(buf); err != nil {
			return
		}
		l.rtcpIn.Add(1)
	}
}

// SetReadDeadline bounds ReadRTP (see PacketSource).
func (l *RTPListener) SetReadDeadline(t time.Time) error { return l.conn.SetReadDeadline(t) }

// Close stops the listener; a blocked ReadRTP returns net.ErrClosed.
func (l *RTPListener) Close() error {
	if l.rtcp != nil {
		_ = l.rtcp.Close()
	}
	return l.conn.Close()
}

// String names the listener for logs.
func (l *RTPListener) String() string {
	a := l.Addr()
	return l.codec.MimeType + " on " + net.JoinHostPort(a.IP.String(), strconv.Itoa(a.Port))
}
