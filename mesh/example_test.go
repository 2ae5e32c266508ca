package mesh_test

import (
	"context"
	"log"

	"canopy/mesh"
	"canopy/mesh/media"
	"canopy/mesh/protocol"
)

// Publish a file as a live stream: the README shows this example. It is
// compiled with the tests (it needs a running server, so it is not run).
func Example_publish() {
	ctx := context.Background()
	video, file, err := media.OpenFile("clip.ivf") // VP8; .h264 and .ogg work too
	if err != nil {
		log.Fatal(err)
	}
	defer file.Close()

	node, err := mesh.Dial(ctx, mesh.Config{
		Server: "http://localhost:8080",
		Stream: "talk",
		Role:   protocol.RoleSource,
		Tracks: mesh.TracksFor(video),
	})
	if err != nil {
		log.Fatal(err)
	}
	defer node.Close()

	// Play paces the file in real time, looping; node.WriteRTP sends your
	// own RTP packets instead.
	log.Fatal(node.Play(ctx, video))
}
