package protocol

import "encoding/base64"

// Messages of source-signed frames (see mesh/framesig and README "Signed
// frames").
const (
	// TypeTampered, peer → server: a frame from my parent (Peer) failed
	// verification; Evidence shows it. The server moves the reporter at
	// once and weighs the report against the parent.
	TypeTampered Type = "tampered"
	// TypeSourceKey, server → peer: the stream's source has a new key
	// (SourceKey; empty: it signs nothing now), after a restart.
	TypeSourceKey Type = "sourceKey"
)

// Limits of the signing fields, in base64url without padding.
const (
	// KeyLength is an Ed25519 public key's encoded length (32 bytes).
	KeyLength = 43
	// HashLength is a SHA-256 hash's encoded length (32 bytes).
	HashLength = 43
	// SigLength is an Ed25519 signature's encoded length (64 bytes).
	SigLength = 86
	// MaxCounter bounds a frame counter: counters start below 2^40 and
	// must stay exact as JavaScript numbers (2^53).
	MaxCounter = 1<<53 - 1
)

// Evidence is what a tampered report shows the server of the frame it
// rejected, all as received: the track ("v" or "a"), the frame's counter,
// the SHA-256 of its canonical media, and its signature (empty when the
// frame carried none). A signature that verifies over the hash means the
// frame was genuine: the report is false unless Last, the counter of the
// last frame the reporter accepted, is not below Counter (a replay).
type Evidence struct {
	Track   string `json:"track"`
	Counter uint64 `json:"counter"`
	Hash    string `json:"hash"`
	Sig     string `json:"sig,omitempty"`
	Last    uint64 `json:"last,omitempty"`
}

// validB64 reports whether s is base64url without padding of n bytes.
func validB64(s string, n int) bool {
	b, err := base64.RawURLEncoding.DecodeString(s)
	return err == nil && len(b) == n
}

// validateSigning checks the signing fields wherever they appear, and that
// only the messages that carry them do.
func (m *Message) validateSigning() error {
	if m.SignKey != "" {
		if m.Type != TypeHello || m.Role != RoleSource {
			return invalid("only a source's hello carries signKey")
		}
		if len(m.SignKey) != KeyLength || !validB64(m.SignKey, 32) {
			return invalid("signKey must be a base64url Ed25519 public key")
		}
	}
	if m.SourceKey != "" {
		if m.Type != TypeWelcome && m.Type != TypeParent && m.Type != TypeSourceKey {
			return invalid("%s carries no sourceKey", m.Type)
		}
		if len(m.SourceKey) != KeyLength || !validB64(m.SourceKey, 32) {
			return invalid("sourceKey must be a base64url Ed25519 public key")
		}
	}
	if m.Verify != nil && m.Type != TypeParent && m.Type != TypeSourceKey {
		return invalid("only parent and sourceKey carry verify")
	}
	if m.Evidence != nil && m.Type != TypeTampered {
		return invalid("only tampered carries evidence")
	}
	if m.NoVerify && m.Type != TypeHello {
		return invalid("only a hello carries noVerify")
	}
	if m.Strip && m.Type != TypeAttach && m.Type != TypePromote && (m.Type != TypeStandby || m.Peer == "") {
		return invalid("only attach, promote and a parent's standby carry strip")
	}
	return nil
}

func (m *Message) validateTampered() error {
	if !ValidID(m.Peer) {
		return invalid("tampered needs the parent's peer id")
	}
	e := m.Evidence
	if e == nil {
		return invalid("tampered needs evidence")
	}
	if e.Track != "v" && e.Track != "a" {
		return invalid("evidence track must be v or a")
	}
	if e.Counter > MaxCounter || e.Last > MaxCounter {
		return invalid("evidence counter above 2^53")
	}
	if len(e.Hash) != HashLength || !validB64(e.Hash, 32) {
		return invalid("evidence hash must be a base64url SHA-256")
	}
	if e.Sig != "" && (len(e.Sig) != SigLength || !validB64(e.Sig, 64)) {
		return invalid("evidence sig must be a base64url Ed25519 signature")
	}
	return nil
}
