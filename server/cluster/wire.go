package cluster

import (
	"encoding/binary"
	"errors"
	"hash/fnv"
	"strconv"
)

// Subjects. A stream's owner listens on shards of its own subject: each
// shard's subscription has a goroutine of its own, and one peer's messages
// stay on one shard, in order. Each server listens on one subject for
// what owners send to the peers connected to it.
const (
	ownerPrefix = "canopy.s."
	edgePrefix  = "canopy.e."
	// shards spreads one stream's messages over this many goroutines at
	// its owner (JSON decoding of SDPs is most of a message's cost).
	shards = 4
)

func ownerSubject(stream string, shard int) string {
	return ownerPrefix + stream + "." + strconv.Itoa(shard)
}

func edgeSubject(id string) string { return edgePrefix + id }

// shardOf keeps one peer on one shard.
func shardOf(peer string) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(peer))
	return int(h.Sum32() % shards)
}

// Message kinds.
const (
	kindOpen  byte = 'o' // edge → owner, a request: a peer's first message
	kindFrame byte = 'f' // either way: one WebSocket frame
	kindClose byte = 'c' // either way: the peer's connection ended
	kindProbe byte = 'p' // owner → edge, a request: is the peer still connected?
	kindAdopt byte = 'a' // edge → owner, a request: an open of a peer whose owner died (handover.go)
)

// Open replies.
const (
	replyOK       byte = 'k'
	replyNotOwner byte = 'n'
)

// errShort means a message was cut short or malformed.
var errShort = errors.New("cluster: malformed message")

// Edge → owner: kind | len(peer) | peer | body; an open's body starts with
// len(edge) | edge.
func encodeToOwner(kind byte, peer string, body []byte) []byte {
	b := make([]byte, 0, 2+len(peer)+len(body))
	b = append(b, kind, byte(len(peer)))
	b = append(b, peer...)
	return append(b, body...)
}

func decodeToOwner(b []byte) (kind byte, peer string, body []byte, err error) {
	if len(b) < 2 || len(b) < 2+int(b[1]) {
		return 0, "", nil, errShort
	}
	n := int(b[1])
	return b[0], string(b[2 : 2+n]), b[2+n:], nil
}

// Owner → edge: kind | epoch (8 bytes) | len(peer) | peer | body.
func encodeToEdge(kind byte, epoch uint64, peer string, body []byte) []byte {
	b := make([]byte, 0, 10+len(peer)+len(body))
	b = append(b, kind)
	b = binary.BigEndian.AppendUint64(b, epoch)
	b = append(b, byte(len(peer)))
	b = append(b, peer...)
	return append(b, body...)
}

func decodeToEdge(b []byte) (kind byte, epoch uint64, peer string, body []byte, err error) {
	if len(b) < 10 || len(b) < 10+int(b[9]) {
		return 0, 0, "", nil, errShort
	}
	n := int(b[9])
	return b[0], binary.BigEndian.Uint64(b[1:9]), string(b[10 : 10+n]), b[10+n:], nil
}

// An open's body: len(edge) | edge | what the edge knows of the peer.
func encodeOpen(edge string, info []byte) []byte {
	b := make([]byte, 0, 1+len(edge)+len(info))
	b = append(b, byte(len(edge)))
	b = append(b, edge...)
	return append(b, info...)
}

func decodeOpen(b []byte) (edge string, info []byte, err error) {
	if len(b) < 1 || len(b) < 1+int(b[0]) {
		return "", nil, errShort
	}
	return string(b[1 : 1+int(b[0])]), b[1+int(b[0]):], nil
}

// An open's reply: status | epoch | the owner's server id.
func encodeReply(status byte, epoch uint64, owner string) []byte {
	return append(binary.BigEndian.AppendUint64([]byte{status}, epoch), owner...)
}

func decodeReply(b []byte) (status byte, epoch uint64, owner string, err error) {
	if len(b) < 9 {
		return 0, 0, "", errShort
	}
	return b[0], binary.BigEndian.Uint64(b[1:9]), string(b[9:]), nil
}
