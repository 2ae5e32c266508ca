package tree
import ("testing";"math/rand/v2";"time";"fmt")
func TestDbgHang(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for it := 0; it < 2000000; it++ {
		data := make([]byte, rng.IntN(300))
		for i := range data { data[i] = byte(rng.Uint32()) }
		done := make(chan bool)
		go func() { runOps(t, data); close(done) }()
		select {
		case <-done:
		case <-time.After(2 * time.Second):
			t.Fatalf("hang on %s", fmt.Sprintf("%#v", data))
		}
	}
}
