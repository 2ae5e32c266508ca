// Package demo embeds Canopy's demo clip — a 10 s 640x360 VP8 test pattern
// with a moving box and a beeping Opus tone — so the server and client can
// stream something with no files on disk. scripts/make-demo-clip.sh makes it.
package demo

import (
	_ "embed"
	"strings"

	"canopy/mesh/media"
)

// Embedded as strings, not []byte, so the package holds no mutable state.
var (
	//go:embed demo.ivf
	ivfData string
	//go:embed demo.ogg
	oggData string
)

// Video returns a copy of the clip's VP8 IVF file.
func Video() []byte { return []byte(ivfData) }

// Audio returns a copy of the clip's Ogg/Opus file.
func Audio() []byte { return []byte(oggData) }

// Open returns looping readers over the clip's video and audio; both loops
// last exactly as long, so they stay in sync however long they play.
func Open() (video, audio media.FrameReader, err error) {
	v, err := media.NewIVFReader(strings.NewReader(ivfData))
	if err != nil {
		return nil, nil, err
	}
	a, err := media.NewOggReader(strings.NewReader(oggData))
	if err != nil {
		return nil, nil, err
	}
	return v, a, nil
}
