package peer

import "errors"

// Errors returned by this package.
var (
	// ErrClosed means the connection or forwarder was closed before the
	// operation could complete.
	ErrClosed = errors.New("peer: closed")
	// ErrFailed means the PeerConnection reached the failed state.
	ErrFailed = errors.New("peer: connection failed")
	// ErrUnexpectedSignal means a signal of a kind this side does not accept
	// (an offer sent to the offerer, an answer sent to the answerer).
	ErrUnexpectedSignal = errors.New("peer: unexpected signal")
	// ErrOtherLink means a signal names a link other than the
	// connection's (protocol.Signal.Link): one of a connection already
	// replaced, dropped.
	ErrOtherLink = errors.New("peer: signal of another link")
	// ErrBadCandidate means a candidate signal did not hold an RTCIceCandidateInit.
	ErrBadCandidate = errors.New("peer: bad ICE candidate")
	// ErrTooManyCandidates means a neighbour sent more ICE candidates than
	// protocol.MaxEdgeCandidates; the rest are dropped, none queued.
	ErrTooManyCandidates = errors.New("peer: too many ICE candidates")
	// ErrUnsupportedCodec means a track's codec is not one the API registers,
	// or the remote peer did not accept it.
	ErrUnsupportedCodec = errors.New("peer: unsupported codec")
	// ErrAlreadyBound means pion bound a forwarder track twice; each child
	// gets its own track, so this is a programming error.
	ErrAlreadyBound = errors.New("peer: track already bound")
	// ErrBadOffer means a parent's offer was refused: more m-sections than
	// the stream has tracks, an unknown kind, or a repeated mid, SSRC or
	// track id (see checkOffer).
	ErrBadOffer = errors.New("peer: offer refused")
	// ErrPacketTooLarge means an RTP payload does not fit a queue slot.
	ErrPacketTooLarge = errors.New("peer: RTP payload too large")
)
