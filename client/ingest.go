package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"canopy/mesh"
	"canopy/mesh/media"
	"canopy/mesh/protocol"
)

// ingestFlags are broadcast's live inputs: RTP from an encoder, or a pipe.
type ingestFlags struct {
	rtp      string
	rtpAudio string
	codec    string
	sdp      string
	format   string
	fps      float64
}

func (f *ingestFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.rtp, "rtp", "", "receive the video as RTP on this UDP address (host:port), e.g. from ffmpeg -f rtp or a GStreamer udpsink")
	fs.StringVar(&f.rtpAudio, "rtp-audio", "", "receive Opus audio as RTP on this UDP address")
	fs.StringVar(&f.codec, "codec", "h264", "the -rtp video codec: h264 (packetization-mode 1) or vp8")
	fs.StringVar(&f.sdp, "sdp", "", "receive the RTP streams an SDP file describes (ffmpeg -sdp_file): codecs, payload types, ports")
	fs.StringVar(&f.format, "format", "", "format of -video - (standard input): ivf or h264; default: detected from the first bytes")
	fs.Float64Var(&f.fps, "fps", media.DefaultH264FPS, "frame rate of H264 read from standard input (raw H264 carries no timing)")
}

// input is what a broadcast sends: the tracks to announce and how to play
// them into the node once it has joined.
type input struct {
	tracks []protocol.Track
	play   func(ctx context.Context, n *mesh.Node) error
	close  func()
	live   bool // ends when the input does
}

// openInput builds the broadcast's input from its flags: RTP listeners, a
// live pipe on standard input (-video -), files or the demo clip.
func openInput(f *ingestFlags, videoPath, audioPath string, stdin io.Reader) (*input, error) {
	if f.rtp != "" || f.rtpAudio != "" || f.sdp != "" {
		if videoPath != "" || audioPath != "" {
			return nil, errors.New("-rtp, -rtp-audio and -sdp replace -video and -audio")
		}
		return openRTP(f)
	}
	if videoPath == "-" || audioPath == "-" {
		if audioPath == "-" {
			return nil, errors.New("-audio - is not supported: standard input carries IVF or H264 video")
		}
		return openPipe(f, audioPath, stdin)
	}
	readers, closeAll, err := openMedia(videoPath, audioPath)
	if err != nil {
		return nil, err
	}
	return frameInput(readers, closeAll, false), nil
}

func frameInput(readers []media.FrameReader, closeAll func(), live bool) *input {
	return &input{
		tracks: mesh.TracksFor(readers...),
		play:   func(ctx context.Context, n *mesh.Node) error { return n.Play(ctx, readers...) },
		close:  closeAll,
		live:   live,
	}
}

// openPipe reads live video from standard input, with an optional audio
// file (looped).
func openPipe(f *ingestFlags, audioPath string, stdin io.Reader) (*input, error) {
	v, err := media.OpenLive(stdin, strings.ToLower(f.format), f.fps)
	if err != nil {
		return nil, fmt.Errorf("-video -: %w", err)
	}
	readers, closeAll := []media.FrameReader{v}, func() {}
	if audioPath != "" {
		a, c, err := media.OpenFile(audioPath)
		if err != nil {
			return nil, err
		}
		readers, closeAll = append(readers, a), func() { _ = c.Close() }
	}
	return frameInput(readers, closeAll, true), nil
}

// openRTP listens where the flags (or the SDP file) say.
func openRTP(f *ingestFlags) (*input, error) {
	type want struct {
		addr  string
		codec media.Codec
		pt    int
	}
	var wants []want
	if f.sdp != "" {
		if f.rtp != "" || f.rtpAudio != "" {
			return nil, errors.New("-sdp names the ports; leave out -rtp and -rtp-audio")
		}
		b, err := os.ReadFile(f.sdp)
		if err != nil {
			return nil, err
		}
		streams, err := media.ParseSDP(b)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f.sdp, err)
		}
		for _, s := range streams {
			wants = append(wants, want{s.Addr, s.Codec, int(s.PayloadType)})
		}
	} else {
		if f.rtp != "" {
			c, ok := media.LookupCodec("video/" + f.codec)
			if !ok || c.MimeType == media.Opus.MimeType {
				return nil, fmt.Errorf("-codec %q: want h264 or vp8", f.codec)
			}
			wants = append(wants, want{f.rtp, c, -1})
		}
		if f.rtpAudio != "" {
			wants = append(wants, want{f.rtpAudio, media.Opus, -1})
		}
	}
	var (
		listeners []*media.RTPListener
		sources   []media.PacketSource
		codecs    []media.Codec
	)
	closeAll := func() {
		for _, l := range listeners {
			_ = l.Close()
		}
	}
	for _, w := range wants {
		l, err := media.ListenRTP(w.addr, w.codec, w.pt)
		if err != nil {
			closeAll()
			return nil, err
		}
		listeners, sources, codecs = append(listeners, l), append(sources, l), append(codecs, w.codec)
	}
	return &input{
		tracks: mesh.TracksForCodecs(codecs...),
		play:   func(ctx context.Context, n *mesh.Node) error { return n.PlayRTP(ctx, sources...) },
		close:  closeAll,
		live:   true,
	}, nil
}

// describe says what the broadcast takes in, for its start-up line.
func (in *input) describe() string {
	if !in.live {
		return fmt.Sprintf("%d tracks", len(in.tracks))
	}
	var kinds []string
	for _, t := range in.tracks {
		kinds = append(kinds, t.ID+" "+strings.TrimPrefix(strings.TrimPrefix(t.MimeType, "video/"), "audio/"))
	}
	return "live: " + strings.Join(kinds, ", ")
}
