package peer

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/pion/sdp/v3"
)

// offerSlack is how many m-sections an offer may carry beyond the stream's
// tracks: one, for a data channel or a track the source added that this
// node's welcome has not told it about yet. Every m-section costs the
// answerer a transceiver, a receiver and a read loop, and pion wedges its
// read loops when sections share an SSRC (an offer of one m-section
// repeated ~90 times, which fits a 48 KiB signal, made Close wait forever).
const offerSlack = 1

// checkOffer refuses an offer the stream cannot have sent: more m-sections
// than tracks (+ offerSlack), a kind other than audio, video or a data
// channel, two sections with one mid, SSRC or track id.
func checkOffer(raw string, tracks int) error {
	var sd sdp.SessionDescription
	if err := sd.UnmarshalString(raw); err != nil {
		return fmt.Errorf("%w: %v", ErrBadOffer, err)
	}
	if n, most := len(sd.MediaDescriptions), tracks+offerSlack; n > most {
		return fmt.Errorf("%w: %d m-sections, at most %d for a stream of %d tracks", ErrBadOffer, n, most, tracks)
	}
	mids := make(map[string]bool, len(sd.MediaDescriptions))
	ids := make(map[string]bool, len(sd.MediaDescriptions))
	ssrcs := make(map[uint32]int)
	for i, m := range sd.MediaDescriptions {
		kind := m.MediaName.Media
		switch kind {
		case "audio", "video", "application":
		default:
			return fmt.Errorf("%w: m-section %d has unknown kind %q", ErrBadOffer, i, kind)
		}
		mid, _ := m.Attribute(sdp.AttrKeyMID)
		if mids[mid] {
			return fmt.Errorf("%w: mid %q repeated", ErrBadOffer, mid)
		}
		mids[mid] = true
		for _, a := range m.Attributes {
			switch a.Key {
			case sdp.AttrKeySSRC:
				field, _, _ := strings.Cut(a.Value, " ")
				ssrc, err := strconv.ParseUint(field, 10, 32)
				if err != nil {
					return fmt.Errorf("%w: bad ssrc %q", ErrBadOffer, a.Value)
				}
				if owner, ok := ssrcs[uint32(ssrc)]; ok && owner != i {
					return fmt.Errorf("%w: ssrc %d in two m-sections", ErrBadOffer, ssrc)
				}
				ssrcs[uint32(ssrc)] = i
			case sdp.AttrKeyMsid:
				if _, id, ok := strings.Cut(a.Value, " "); ok {
					if ids[id] {
						return fmt.Errorf("%w: track %q in two m-sections", ErrBadOffer, id)
					}
					ids[id] = true
				}
			}
		}
	}
	return nil
}
