package protocol

import (
	"errors"
	"strings"
	"testing"
)

const (
	testKey  = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
	testHash = "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU"
	testSig  = "5VZDAMNgrHKQhuLMgG6CioSHfx645dl02HPgZSJJAVVfuIIVkKM7rMYeOXAc-bRr0lv18FlbviRlUUFDjnoQCw"
)

func tampered(evidence string) string {
	return `{"type":"tampered","peer":"p2","evidence":` + evidence + `}`
}

func TestSigningValid(t *testing.T) {
	for name, in := range map[string]string{
		"source signKey":    `{"type":"hello","v":1,"role":"source","kind":"go","stream":"demo","signKey":"` + testKey + `","tracks":[` + videoTrack + `]}`,
		"welcome sourceKey": `{"type":"welcome","id":"p1","stream":"demo","sourceKey":"` + testKey + `"}`,
		"parent verify":     `{"type":"parent","peer":"p2","sourceKey":"` + testKey + `","verify":false}`,
		"sourceKey verify":  `{"type":"sourceKey","sourceKey":"` + testKey + `","verify":false}`,
		"sourceKey":         `{"type":"sourceKey","sourceKey":"` + testKey + `"}`,
		"sourceKey none":    `{"type":"sourceKey"}`,
		"tampered":          tampered(`{"track":"v","counter":1099511627776,"hash":"` + testHash + `","sig":"` + testSig + `"}`),
		"tampered unsigned": tampered(`{"track":"a","counter":0,"hash":"` + testHash + `"}`),
		"tampered replay":   tampered(`{"track":"v","counter":5,"hash":"` + testHash + `","sig":"` + testSig + `","last":9}`),
	} {
		m, err := Decode([]byte(in))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if _, err := Encode(m); err != nil {
			t.Errorf("%s: encode: %v", name, err)
		}
	}
	m, _ := Decode([]byte(`{"type":"parent","peer":"p2","verify":false}`))
	if m.Verify == nil || *m.Verify {
		t.Fatal("verify=false lost")
	}
}

func TestSigningInvalid(t *testing.T) {
	good := `{"track":"v","counter":1,"hash":"` + testHash + `","sig":"` + testSig + `"}`
	for name, in := range map[string]string{
		"viewer signKey":      hello(`,"signKey":"` + testKey + `"`),
		"short signKey":       `{"type":"hello","v":1,"role":"source","kind":"go","stream":"demo","signKey":"abc","tracks":[` + videoTrack + `]}`,
		"padded signKey":      `{"type":"hello","v":1,"role":"source","kind":"go","stream":"demo","signKey":"` + testKey[:42] + `=","tracks":[` + videoTrack + `]}`,
		"sourceKey on attach": `{"type":"attach","peer":"p2","sourceKey":"` + testKey + `"}`,
		"bad sourceKey":       `{"type":"welcome","id":"p1","stream":"demo","sourceKey":"` + strings.Repeat("!", KeyLength) + `"}`,
		"verify on welcome":   `{"type":"welcome","id":"p1","stream":"demo","verify":true}`,
		"evidence on stalled": `{"type":"stalled","peer":"p2","evidence":` + good + `}`,
		"tampered no peer":    `{"type":"tampered","evidence":` + good + `}`,
		"tampered no body":    `{"type":"tampered","peer":"p2"}`,
		"bad track":           tampered(`{"track":"x","counter":1,"hash":"` + testHash + `"}`),
		"huge counter":        tampered(`{"track":"v","counter":9007199254740992,"hash":"` + testHash + `"}`),
		"short hash":          tampered(`{"track":"v","counter":1,"hash":"abc"}`),
		"no hash":             tampered(`{"track":"v","counter":1}`),
		"short sig":           tampered(`{"track":"v","counter":1,"hash":"` + testHash + `","sig":"` + testSig[:80] + `"}`),
	} {
		if _, err := Decode([]byte(in)); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
	if _, err := Decode([]byte(tampered(`{"track":"v","counter":-1,"hash":"` + testHash + `"}`))); !errors.Is(err, ErrMalformed) {
		t.Errorf("negative counter: %v", err)
	}
	if _, err := Decode([]byte(tampered(`{"track":"v","counter":1,"hash":"` + testHash + `","x":1}`))); !errors.Is(err, ErrMalformed) {
		t.Errorf("unknown evidence field: %v", err)
	}
}
