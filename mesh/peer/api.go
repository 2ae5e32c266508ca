// Package peer wraps pion PeerConnections for Canopy's tree: a parent's
// send-only Downstream to each child, a child's receive-only Upstream from its
// parent, and the Forwarder that fans one track's RTP out to every child
// without re-encoding, through a bounded queue per child so that a slow child
// never stalls the others.
package peer

import (
	"fmt"
	"log/slog"
	"net/netip"
	"strings"

	"canopy/mesh/protocol"
	"github.com/pion/dtls/v3"
	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/interceptor/pkg/nack"
	"github.com/pion/interceptor/pkg/report"
	"github.com/pion/transport/v5"
	"github.com/pion/transport/v5/stdnet"
	"github.com/pion/webrtc/v4"
)

// StreamID is the MediaStream id every forwarded track carries, so a browser
// child sees all of a stream's tracks in one MediaStream.
const StreamID = "canopy"

// Config configures an API.
type Config struct {
	// LoopbackOnly restricts ICE to the "lo" interface, UDP4, loopback
	// candidates and no mDNS: what in-process tests need (FIELD-NOTES).
	LoopbackOnly bool
	// ICEServers are the STUN/TURN servers every PeerConnection uses.
	ICEServers []webrtc.ICEServer
	// Logger receives this package's and pion's logs; nil means slog.Default().
	Logger *slog.Logger
	// Net replaces the host's network, e.g. with a pion/transport vnet to
	// test loss; nil means the real network.
	Net transport.Net
	// UDPMux, if set, carries every PeerConnection's ICE traffic on one UDP
	// port: one port to open in a firewall. Make it with NewUDPMuxFromPort
	// to keep sends batched.
	UDPMux ice.UDPMux
	// PublicIPs are advertised as host candidates in place of the local
	// addresses, for a host behind 1:1 NAT (a cloud VM).
	PublicIPs []string
	// RemoteCandidateFilter, if set, decides which of a neighbour's ICE
	// candidates (trickled, or in its description) ICE may check: a
	// refused one is dropped, so no STUN is ever sent to it. The server's
	// own peers set it, so a viewer cannot point them at the server's
	// network or its own ports. Addresses come unmapped, without a zone;
	// candidates named by a host name (mDNS) are refused. Nil allows all.
	RemoteCandidateFilter func(addr netip.Addr, port int) bool
	// RelayOnly gathers and uses TURN relay candidates only (ICE transport
	// policy relay): a viewer in private mode, whose neighbours then see
	// the relay's address, never its own. It needs a TURN server in
	// ICEServers, or nothing connects.
	RelayOnly bool
}

// API builds PeerConnections that share one codec, interceptor and network
// configuration.
type API struct {
	api    *webrtc.API
	cfg    Config
	logger *slog.Logger

	// What a Downstream's own webrtc.API is built from: a sender's
	// PeerConnection gets a batchNet of its own (see batch.go) and only
	// the sending side's interceptors.
	me      *webrtc.MediaEngine
	sendReg *interceptor.Registry
	se      webrtc.SettingEngine
	recvReg *interceptor.Registry // the receiving side's, for NewIngestPeerConnection
}

// Receive windows, in packets. A hop retransmits a lost packet with its
// original SSRC and sequence number (no RTX), and a GOP burst to a new child
// runs at 50 Mbps (~5200 packets/s): by the time the NACK generator's next
// 100 ms tick asks for a hole and the answer is back, 500-1000 newer packets
// have arrived. pion's defaults forget a hole or reject its repair far
// sooner: the SRTP replay window (64 packets, 12 ms of burst) drops the
// retransmission as a replay, and the generator's receive log (512) stops
// asking once 512 newer packets are in. Both are sized for a few rounds of
// repair at burst rate (4096 packets: 0.8 s of burst, 20 s of a 2 Mbps
// stream); the replay window still rejects every duplicate inside it.
// Chromium's own window is 1024 and it keeps NACKing up to 10000 packets back.
const (
	srtpReplayWindow = 4096
	nackLogSize      = 4096
)

// videoFeedback is what pion's defaults advertise for video; PLI and NACK are
// the ones Canopy relies on hop by hop.
var videoFeedback = []webrtc.RTCPFeedback{
	{Type: "goog-remb"}, {Type: "ccm", Parameter: "fir"}, {Type: "nack"}, {Type: "nack", Parameter: "pli"},
}

// registeredCodecs is the subset of pion's defaults Canopy forwards: Opus,
// VP8 and the H264 variants browsers offer, each video codec with its RTX.
var registeredCodecs = []webrtc.RTPCodecParameters{
	{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2, SDPFmtpLine: "minptime=10;useinbandfec=1"}, PayloadType: 111},
	{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000, RTCPFeedback: videoFeedback}, PayloadType: 96},
	{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeRTX, ClockRate: 90000, SDPFmtpLine: "apt=96"}, PayloadType: 97},
	h264(102, "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f"), rtx(103, 102),
	h264(104, "level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42001f"), rtx(105, 104),
	h264(106, "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"), rtx(107, 106),
	h264(108, "level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42e01f"), rtx(109, 108),
	h264(127, "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=4d001f"), rtx(125, 127),
	h264(39, "level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=4d001f"), rtx(40, 39),
	h264(112, "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=64001f"), rtx(113, 112),
}

func h264(pt webrtc.PayloadType, fmtp string) webrtc.RTPCodecParameters {
	return webrtc.RTPCodecParameters{RTPCodecCapability: webrtc.RTPCodecCapability{
		MimeType: webrtc.MimeTypeH264, ClockRate: 90000, SDPFmtpLine: fmtp, RTCPFeedback: videoFeedback,
	}, PayloadType: pt}
}

func rtx(pt, apt webrtc.PayloadType) webrtc.RTPCodecParameters {
	return webrtc.RTPCodecParameters{RTPCodecCapability: webrtc.RTPCodecCapability{
		MimeType: webrtc.MimeTypeRTX, ClockRate: 90000, SDPFmtpLine: fmt.Sprintf("apt=%d", apt),
	}, PayloadType: pt}
}

// NewAPI builds the pion API: codecs, interceptors (NACK generator, RTCP
// sender and receiver reports) and settings.
func NewAPI(cfg Config) (*API, error) {
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	lf := slogFactory{logger: logger}

	me := &webrtc.MediaEngine{}
	for _, c := range registeredCodecs {
		kind := webrtc.RTPCodecTypeVideo
		if strings.HasPrefix(c.MimeType, "audio/") {
			kind = webrtc.RTPCodecTypeAudio
		}
		if err := me.RegisterCodec(c, kind); err != nil {
			return nil, fmt.Errorf("peer: register %s: %w", c.MimeType, err)
		}
	}

	// abs-capture-time lets every viewer measure its delay from the source;
	// relays forward it unchanged (see AbsCaptureTimeID).
	for _, kind := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeVideo, webrtc.RTPCodecTypeAudio} {
		if err := me.RegisterHeaderExtension(webrtc.RTPHeaderExtensionCapability{URI: AbsCaptureTimeURI}, kind); err != nil {
			return nil, fmt.Errorf("peer: register abs-capture-time: %w", err)
		}
	}

	// No stats or TWCC interceptor: each costs a lock and bookkeeping per
	// packet per child, and the relay's budget per forwarded packet is small.
	// NACKs: pion's generator asks parents for what a child lost. There is
	// no responder interceptor: it copies every packet sent to every child
	// into its own buffer; a Forwarder's child answers NACKs from its ring.
	reg := &interceptor.Registry{}
	gen, err := nack.NewGeneratorInterceptor(nack.WithGeneratorLoggerFactory(lf), nack.GeneratorSize(nackLogSize))
	if err != nil {
		return nil, fmt.Errorf("peer: nack: %w", err)
	}
	reg.Add(gen)
	if err := webrtc.ConfigureRTCPReportsWithOptions(reg,
		[]report.ReceiverOption{report.WithReceiverLoggerFactory(lf)},
		report.WithSenderLoggerFactory(lf)); err != nil {
		return nil, fmt.Errorf("peer: reports: %w", err)
	}
	// A Downstream only sends: it needs sender reports (lip sync) and none
	// of the receiving side's interceptors, whose timers (the NACK
	// generator ticks every 100 ms) would run in every child's connection.
	sendReg := &interceptor.Registry{}
	sr, err := report.NewSenderInterceptor(report.WithSenderLoggerFactory(lf))
	if err != nil {
		return nil, fmt.Errorf("peer: sender reports: %w", err)
	}
	sendReg.Add(sr)

	se := webrtc.SettingEngine{LoggerFactory: lf}
	se.SetSRTPReplayProtectionWindow(srtpReplayWindow)
	// GCM first: with AES-NI it encrypts and authenticates in one pass,
	// cheaper per packet than CM + HMAC-SHA1, and every browser offers both.
	se.SetSRTPProtectionProfiles(dtls.SRTP_AEAD_AES_128_GCM, dtls.SRTP_AES128_CM_HMAC_SHA1_80)
	// Loopback candidates cost nothing and let a viewer on the same host
	// (the demo on a laptop with no network) connect.
	se.SetIncludeLoopbackCandidate(true)
	if cfg.Net != nil {
		se.SetNet(cfg.Net)
		se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
		se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	}
	if cfg.UDPMux != nil {
		se.SetICEUDPMux(cfg.UDPMux)
	}
	if len(cfg.PublicIPs) > 0 {
		if err := se.SetICEAddressRewriteRules(webrtc.ICEAddressRewriteRule{
			External: cfg.PublicIPs, AsCandidateType: webrtc.ICECandidateTypeHost, Mode: webrtc.ICEAddressRewriteReplace,
		}); err != nil {
			return nil, fmt.Errorf("peer: public IPs %v: %w", cfg.PublicIPs, err)
		}
	}
	if cfg.LoopbackOnly && cfg.Net == nil {
		se.SetInterfaceFilter(func(n string) bool { return n == "lo" })
		se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
		se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	}

	api := webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithInterceptorRegistry(reg), webrtc.WithSettingEngine(se))
	return &API{api: api, cfg: cfg, logger: logger, me: me, sendReg: sendReg, se: se, recvReg: reg}, nil
}

// newConn wraps a PeerConnection of this API's in a conn that applies the
// API's remote candidate filter.
func (a *API) newConn(pc *webrtc.PeerConnection, send func(protocol.Signal), logger *slog.Logger) *conn {
	c := newConn(pc, send, logger)
	c.filter = a.cfg.RemoteCandidateFilter
	return c
}

func (a *API) newPeerConnection() (*webrtc.PeerConnection, error) {
	return a.api.NewPeerConnection(a.configuration())
}

// configuration is every PeerConnection's: the ICE servers, and the relay
// policy in private mode.
func (a *API) configuration() webrtc.Configuration {
	c := webrtc.Configuration{ICEServers: a.cfg.ICEServers}
	if a.cfg.RelayOnly {
		c.ICETransportPolicy = webrtc.ICETransportPolicyRelay
	}
	return c
}

// newSendingPeerConnection builds a PeerConnection whose UDP sockets batch
// what a Downstream's writers send (batch.go). With a UDP mux every
// connection shares the mux's sockets: they batch if NewUDPMuxFromPort made
// them, and the batchNet is nil otherwise.
func (a *API) newSendingPeerConnection() (*webrtc.PeerConnection, *batchNet, error) {
	se := a.se
	var bn *batchNet
	if m, ok := a.cfg.UDPMux.(*batchedMux); ok {
		bn = m.net
	} else if a.cfg.UDPMux == nil {
		base := a.cfg.Net
		if base == nil {
			n, err := stdnet.NewNet()
			if err != nil {
				return nil, nil, fmt.Errorf("peer: network: %w", err)
			}
			base = n
		}
		bn = newBatchNet(base)
		se.SetNet(bn)
	}
	api := webrtc.NewAPI(webrtc.WithMediaEngine(a.me), webrtc.WithInterceptorRegistry(a.sendReg), webrtc.WithSettingEngine(se))
	pc, err := api.NewPeerConnection(a.configuration())
	return pc, bn, err
}

// fmtpParam returns one key's value from an fmtp line, lower-cased.
func fmtpParam(fmtp, key string) string {
	for _, kv := range strings.Split(fmtp, ";") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if ok && strings.EqualFold(k, key) {
			return strings.ToLower(v)
		}
	}
	return ""
}

// codecScore ranks how well a candidate codec fits a track's declared codec:
// 0 no match, 1 same MIME type, 2 same H264 packetization mode, 3 same
// packetization mode and profile too (or an exact fmtp match).
func codecScore(want webrtc.RTPCodecCapability, c webrtc.RTPCodecCapability) int {
	if !strings.EqualFold(want.MimeType, c.MimeType) || want.ClockRate != c.ClockRate {
		return 0
	}
	if strings.EqualFold(want.SDPFmtpLine, c.SDPFmtpLine) {
		return 3
	}
	if !strings.EqualFold(want.MimeType, webrtc.MimeTypeH264) {
		return 2
	}
	mode := func(f string) string {
		if m := fmtpParam(f, "packetization-mode"); m != "" {
			return m
		}
		return "0" // RFC 6184 default
	}
	if mode(want.SDPFmtpLine) != mode(c.SDPFmtpLine) {
		return 1
	}
	if fmtpParam(want.SDPFmtpLine, "profile-level-id") == fmtpParam(c.SDPFmtpLine, "profile-level-id") {
		return 3
	}
	return 2
}

// bestCodec picks the best fitting codec of a list (nil if none fits).
func bestCodec(want webrtc.RTPCodecCapability, list []webrtc.RTPCodecParameters) *webrtc.RTPCodecParameters {
	var best *webrtc.RTPCodecParameters
	bestScore := 0
	for i := range list {
		if s := codecScore(want, list[i].RTPCodecCapability); s > bestScore {
			best, bestScore = &list[i], s
		}
	}
	return best
}

// codecPreferences narrows a transceiver to the track's own codec (and its
// RTX), so the offer does not promise the child codecs the stream is not in.
func codecPreferences(want webrtc.RTPCodecCapability) ([]webrtc.RTPCodecParameters, error) {
	best := bestCodec(want, registeredCodecs)
	if best == nil {
		return nil, fmt.Errorf("%w: %s %s", ErrUnsupportedCodec, want.MimeType, want.SDPFmtpLine)
	}
	prefs := []webrtc.RTPCodecParameters{*best}
	apt := fmt.Sprintf("apt=%d", best.PayloadType)
	for _, c := range registeredCodecs {
		if c.MimeType == webrtc.MimeTypeRTX && c.SDPFmtpLine == apt {
			prefs = append(prefs, c)
		}
	}
	return prefs, nil
}
