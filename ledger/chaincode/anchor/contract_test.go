package anchor

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/hyperledger/fabric-chaincode-go/v2/shim"
)

var (
	hexA = strings.Repeat("a", 64)
	hexB = strings.Repeat("b", 64)
)

// fields returns a valid seal header of site s with the given batch id and prev hash.
func fields(site, id, prev string) map[string]any {
	return map[string]any{
		"amends": nil, "batch_id": id, "findings_digest": hexA, "kind": "seal", "leaf_count": 10,
		"prev_hash": prev, "root": hexB, "sealed_ms": int64(1780000000000), "site": site, "v": 1,
		"window_end_ms": 3600000, "window_start_ms": 0,
	}
}

// enc encodes a map as compact JSON with sorted keys: the canonical form for these values,
// produced independently of Header.Canonical.
func enc(t *testing.T, m map[string]any) string {
	t.Helper()
	var buf bytes.Buffer
	e := json.NewEncoder(&buf)
	e.SetEscapeHTML(false)
	if err := e.Encode(m); err != nil {
		t.Fatal(err)
	}
	return strings.TrimSuffix(buf.String(), "\n")
}

func mustAnchor(t *testing.T, l *ledger, header string) Record {
	t.Helper()
	out, err := l.anchor(header)
	if err != nil {
		t.Fatalf("AnchorBatch: %v", err)
	}
	var r Record
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("record JSON %q: %v", out, err)
	}
	return r
}

func wantCode(t *testing.T, err error, code string, substr ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("want %s error, got success", code)
	}
	if !strings.HasPrefix(err.Error(), code+": ") {
		t.Fatalf("want error starting %q, got %q", code+": ", err)
	}
	for _, s := range substr {
		if !strings.Contains(err.Error(), s) {
			t.Fatalf("error %q does not mention %q", err, s)
		}
	}
}

func head(t *testing.T, l *ledger, site string) Head {
	t.Helper()
	out, err := l.getHead(site)
	if err != nil {
		t.Fatal(err)
	}
	var h Head
	if err := json.Unmarshal([]byte(out), &h); err != nil {
		t.Fatal(err)
	}
	return h
}

// golden: the bytes and hash produced by the Python side (rfc8785.dumps + hashlib.sha256).
const goldenHeader = `{"amends":null,"batch_id":"s01:2026-06-01T00","findings_digest":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","kind":"seal","leaf_count":10,"prev_hash":"0000000000000000000000000000000000000000000000000000000000000000","root":"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb","sealed_ms":1780000000000,"site":"s01","v":1,"window_end_ms":3600000,"window_start_ms":0}`
const goldenHash = "6d3451b8c66f64945b614f25ef4c4bde5545dd45558a5522ffed877fc8d8c628"

func TestAnchorValidMovesHeadAndSetsEvent(t *testing.T) {
	l := newLedger()
	if h := head(t, l, "s01"); h.HeaderHash != GenesisHash || h.BatchID != "" || h.Seq != 0 || h.Site != "s01" {
		t.Fatalf("unknown site head = %+v", h)
	}
	out, err := l.anchor(goldenHeader)
	if err != nil {
		t.Fatal(err)
	}
	wantRec := `{"batch_id":"s01:2026-06-01T00","site":"s01","header":` + mustJSONString(goldenHeader) +
		`,"header_hash":"` + goldenHash + `","seq":1,"tx_id":"tx0002","tx_time_ms":1780000002123}`
	if out != wantRec {
		t.Fatalf("record\n got %s\nwant %s", out, wantRec)
	}
	if len(l.stub.events) != 1 || l.stub.events[0].name != "BatchAnchored" || string(l.stub.events[0].payload) != out {
		t.Fatalf("events = %+v", l.stub.events)
	}
	h := head(t, l, "s01")
	if h != (Head{Site: "s01", HeaderHash: goldenHash, BatchID: "s01:2026-06-01T00", Seq: 1}) {
		t.Fatalf("head = %+v", h)
	}
	headJSON, _ := l.getHead("s01")
	if headJSON != `{"site":"s01","header_hash":"`+goldenHash+`","batch_id":"s01:2026-06-01T00","seq":1}` {
		t.Fatalf("head JSON = %s", headJSON)
	}
	got, err := l.getBatch("s01:2026-06-01T00")
	if err != nil || got != out {
		t.Fatalf("GetBatch = %q, %v", got, err)
	}

	// second batch chains on the first
	f := fields("s01", "s01:2026-06-01T01", goldenHash)
	f["window_start_ms"], f["window_end_ms"] = 3600000, 7200000
	r2 := mustAnchor(t, l, enc(t, f))
	if r2.Seq != 2 || r2.HeaderHash != HashHex([]byte(r2.Header)) {
		t.Fatalf("second record = %+v", r2)
	}
	if h := head(t, l, "s01"); h.Seq != 2 || h.HeaderHash != r2.HeaderHash || h.BatchID != r2.BatchID {
		t.Fatalf("head after 2nd = %+v", h)
	}
	if len(l.stub.events) != 2 {
		t.Fatalf("want 2 events, got %d", len(l.stub.events))
	}
}

func mustJSONString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func TestNonCanonicalRefused(t *testing.T) {
	cases := map[string]string{
		"space after colon": strings.Replace(goldenHeader, `"kind":"seal"`, `"kind": "seal"`, 1),
		"leading space":     " " + goldenHeader,
		"trailing newline":  goldenHeader + "\n",
		"unsorted keys":     `{"batch_id":"s01:2026-06-01T00","amends":null` + goldenHeader[len(`{"amends":null,"batch_id":"s01:2026-06-01T00"`):],
		"escaped char":      strings.Replace(goldenHeader, `"kind":"seal"`, `"kind":"s\u0065al"`, 1),
		"exponent integer":  strings.Replace(goldenHeader, `"leaf_count":10`, `"leaf_count":1E1`, 1),
		"duplicate key":     strings.Replace(goldenHeader, `"v":1,`, `"v":1,"v":1,`, 1),
		"negative zero":     strings.Replace(goldenHeader, `"window_start_ms":0`, `"window_start_ms":-0`, 1),
		"pretty printed":    strings.ReplaceAll(goldenHeader, ",", ",\n  "),
		"trailing data":     goldenHeader + "{}",
		"not an object":     `[1,2]`,
		"null":              `null`,
		"empty":             ``,
	}
	for name, raw := range cases {
		t.Run(name, func(t *testing.T) {
			l := newLedger()
			_, err := l.anchor(raw)
			wantCode(t, err, "INVALID_HEADER")
			t.Log(err)
			if h := head(t, l, "s01"); h.Seq != 0 {
				t.Fatalf("head moved: %+v", h)
			}
		})
	}
}

func TestBadFieldsNamed(t *testing.T) {
	type mod func(m map[string]any)
	set := func(k string, v any) mod { return func(m map[string]any) { m[k] = v } }
	del := func(k string) mod { return func(m map[string]any) { delete(m, k) } }
	cases := []struct {
		name  string
		field string
		m     mod
	}{
		{"v=2", "v", set("v", 2)},
		{"v string", "v", set("v", "1")},
		{"v null", "v", set("v", nil)},
		{"v float", "v", set("v", 1.5)},
		{"batch_id empty", "batch_id", set("batch_id", "")},
		{"batch_id bad char", "batch_id", set("batch_id", "s01/x")},
		{"batch_id leading dash", "batch_id", set("batch_id", "-x")},
		{"batch_id too long", "batch_id", set("batch_id", "a"+strings.Repeat("b", 128))},
		{"batch_id number", "batch_id", set("batch_id", 5)},
		{"site bad", "site", set("site", "s 01")},
		{"site null", "site", set("site", nil)},
		{"kind bad", "kind", set("kind", "other")},
		{"window_start negative", "window_start_ms", set("window_start_ms", -1)},
		{"window_end too big", "window_end_ms", set("window_end_ms", int64(1)<<53)},
		{"window_end == start", "window_end_ms", set("window_end_ms", 0)},
		{"leaf_count negative", "leaf_count", set("leaf_count", -5)},
		{"leaf_count string", "leaf_count", set("leaf_count", "10")},
		{"sealed_ms float", "sealed_ms", set("sealed_ms", 1.25)},
		{"root upper", "root", set("root", strings.Repeat("A", 64))},
		{"root short", "root", set("root", strings.Repeat("a", 63))},
		{"prev_hash long", "prev_hash", set("prev_hash", strings.Repeat("0", 65))},
		{"findings_digest non-hex", "findings_digest", set("findings_digest", strings.Repeat("g", 64))},
		{"amends on seal", "amends", set("amends", "s01:x")},
		{"amends not string", "amends", set("amends", 7)},
		{"missing amends", "amends", del("amends")},
		{"missing root", "root", del("root")},
		{"missing v", "v", del("v")},
		{"unknown field", "extra", set("extra", 1)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l := newLedger()
			f := fields("s01", "s01:b1", GenesisHash)
			c.m(f)
			_, err := l.anchor(enc(t, f))
			wantCode(t, err, "INVALID_HEADER", `"`+c.field+`"`)
			if len(l.stub.state) != 0 || len(l.stub.events) != 0 {
				t.Fatalf("state written on refusal")
			}
		})
	}
	// the largest safe integer is fine
	l := newLedger()
	f := fields("s01", "s01:b1", GenesisHash)
	f["window_end_ms"] = int64(1)<<53 - 1
	mustAnchor(t, l, enc(t, f))
}

func TestOverwriteRefused(t *testing.T) {
	l := newLedger()
	r1 := mustAnchor(t, l, goldenHeader)
	// same id again, even correctly chained
	f := fields("s01", "s01:2026-06-01T00", r1.HeaderHash)
	f["leaf_count"] = 11
	_, err := l.anchor(enc(t, f))
	wantCode(t, err, "ALREADY_ANCHORED", "batch s01:2026-06-01T00 is already on the ledger")
	// exact resubmission
	_, err = l.anchor(goldenHeader)
	wantCode(t, err, "ALREADY_ANCHORED")
	got, _ := l.getBatch("s01:2026-06-01T00")
	if r, _ := json.Marshal(r1); got != string(r) {
		t.Fatalf("record changed: %s", got)
	}
	if h := head(t, l, "s01"); h.Seq != 1 {
		t.Fatalf("head = %+v", h)
	}
	// the same batch id under another site is refused as well (ids are global)
	_, err = l.anchor(enc(t, fields("s02", "s01:2026-06-01T00", GenesisHash)))
	wantCode(t, err, "ALREADY_ANCHORED")
}

func TestBrokenChainRefused(t *testing.T) {
	l := newLedger()
	_, err := l.anchor(enc(t, fields("s01", "s01:b1", hexA)))
	wantCode(t, err, "CHAIN_BROKEN", "prev_hash "+hexA+" is not the head "+GenesisHash+" of site s01")

	r1 := mustAnchor(t, l, enc(t, fields("s01", "s01:b1", GenesisHash)))
	_, err = l.anchor(enc(t, fields("s01", "s01:b2", GenesisHash)))
	wantCode(t, err, "CHAIN_BROKEN", "prev_hash "+GenesisHash+" is not the head "+r1.HeaderHash+" of site s01")
	_, err = l.anchor(enc(t, fields("s01", "s01:b2", hexB)))
	wantCode(t, err, "CHAIN_BROKEN")
	if h := head(t, l, "s01"); h.Seq != 1 || h.HeaderHash != r1.HeaderHash {
		t.Fatalf("head = %+v", h)
	}
	mustAnchor(t, l, enc(t, fields("s01", "s01:b2", r1.HeaderHash)))
}

func TestAmendments(t *testing.T) {
	l := newLedger()
	r1 := mustAnchor(t, l, enc(t, fields("s01", "s01:b1", GenesisHash)))
	o1 := mustAnchor(t, l, enc(t, fields("s02", "s02:b1", GenesisHash)))

	amend := func(site, id, prev string, amends any) map[string]any {
		f := fields(site, id, prev)
		f["kind"] = "amendment"
		f["amends"] = amends
		return f
	}
	_, err := l.anchor(enc(t, amend("s01", "s01:a1", r1.HeaderHash, nil)))
	wantCode(t, err, "INVALID_HEADER", `"amends"`)
	_, err = l.anchor(enc(t, amend("s01", "s01:a1", r1.HeaderHash, "bad id!")))
	wantCode(t, err, "INVALID_HEADER", `"amends"`)
	_, err = l.anchor(enc(t, amend("s01", "s01:a1", r1.HeaderHash, "s01:a1")))
	wantCode(t, err, "INVALID_HEADER", `"amends"`)
	_, err = l.anchor(enc(t, amend("s01", "s01:a1", r1.HeaderHash, "s01:nope")))
	wantCode(t, err, "NOT_FOUND", "s01:nope")
	_, err = l.anchor(enc(t, amend("s01", "s01:a1", r1.HeaderHash, "s02:b1")))
	wantCode(t, err, "INVALID_HEADER", `"amends"`, "s02")

	a1 := mustAnchor(t, l, enc(t, amend("s01", "s01:a1", r1.HeaderHash, "s01:b1")))
	if a1.Seq != 2 {
		t.Fatalf("amendment seq = %d", a1.Seq)
	}
	// an amendment of an amendment is allowed (it is a batch of the same site)
	mustAnchor(t, l, enc(t, amend("s01", "s01:a2", a1.HeaderHash, "s01:a1")))
	// amendments also chain: a stale prev_hash is refused
	_, err = l.anchor(enc(t, amend("s02", "s02:a1", GenesisHash, "s02:b1")))
	wantCode(t, err, "CHAIN_BROKEN")
	mustAnchor(t, l, enc(t, amend("s02", "s02:a1", o1.HeaderHash, "s02:b1")))
}

func TestVerdictSetsAndRestatements(t *testing.T) {
	l := newLedger()
	b1 := mustAnchor(t, l, enc(t, fields("claims:acme", "claims:acme:r1", GenesisHash)))
	v := fields("claims:acme", "claims:acme:v1", b1.HeaderHash)
	v["kind"] = "verdicts"
	v1 := mustAnchor(t, l, enc(t, v))
	withAmends := fields("claims:acme", "claims:acme:v2", v1.HeaderHash)
	withAmends["kind"] = "verdicts"
	withAmends["amends"] = "claims:acme:v1"
	_, err := l.anchor(enc(t, withAmends))
	wantCode(t, err, "INVALID_HEADER", `"amends"`)

	restate := func(id, prev string, amends any) map[string]any {
		f := fields("claims:acme", id, prev)
		f["kind"] = "restatement"
		f["amends"] = amends
		return f
	}
	_, err = l.anchor(enc(t, restate("claims:acme:v2", v1.HeaderHash, nil)))
	wantCode(t, err, "INVALID_HEADER", `"amends"`)
	// a restatement supersedes a verdict set, never a readings batch
	_, err = l.anchor(enc(t, restate("claims:acme:v2", v1.HeaderHash, "claims:acme:r1")))
	wantCode(t, err, "INVALID_HEADER", "restatement", "seal")
	v2 := mustAnchor(t, l, enc(t, restate("claims:acme:v2", v1.HeaderHash, "claims:acme:v1")))
	// and an amendment never amends a verdict set
	a := fields("claims:acme", "claims:acme:a1", v2.HeaderHash)
	a["kind"] = "amendment"
	a["amends"] = "claims:acme:v2"
	_, err = l.anchor(enc(t, a))
	wantCode(t, err, "INVALID_HEADER", "amendment", "restatement")
	rep := fields("claims:acme", "claims:acme:report1", v2.HeaderHash)
	rep["kind"] = "report"
	rep["amends"] = "claims:acme:v2"
	_, err = l.anchor(enc(t, rep))
	wantCode(t, err, "INVALID_HEADER", `"amends"`)
	rep["amends"] = nil
	r1 := mustAnchor(t, l, enc(t, rep))
	_, err = l.anchor(enc(t, restate("claims:acme:v3", r1.HeaderHash, "claims:acme:report1")))
	wantCode(t, err, "INVALID_HEADER", "restatement", "report")
	bad := fields("claims:acme", "claims:acme:x", r1.HeaderHash)
	bad["kind"] = "verdict"
	_, err = l.anchor(enc(t, bad))
	wantCode(t, err, "INVALID_HEADER", `"kind"`)
}

func TestSitesIndependent(t *testing.T) {
	l := newLedger()
	prev := map[string]string{"s01": GenesisHash, "s02": GenesisHash}
	for i := 1; i <= 3; i++ {
		for _, s := range []string{"s01", "s02"} {
			r := mustAnchor(t, l, enc(t, fields(s, fmt.Sprintf("%s:b%d", s, i), prev[s])))
			if r.Seq != int64(i) || r.Site != s {
				t.Fatalf("record %+v", r)
			}
			prev[s] = r.HeaderHash
		}
	}
	for _, s := range []string{"s01", "s02"} {
		if h := head(t, l, s); h.Seq != 3 || h.HeaderHash != prev[s] || h.BatchID != s+":b3" {
			t.Fatalf("head %s = %+v", s, h)
		}
	}
	// writes touch only per-site and per-batch keys: no shared counter
	for k := range l.stub.state {
		_, attrs := splitKey(k)
		if len(attrs) == 0 {
			t.Fatalf("key without attributes: %q", k)
		}
	}
}

func splitKey(k string) (string, []string) {
	parts := strings.Split(strings.Trim(k, "\x00"), "\x00")
	return parts[0], parts[1:]
}

func TestWritesOnlySiteKeys(t *testing.T) {
	l := newLedger()
	mustAnchor(t, l, enc(t, fields("s01", "s01:b1", GenesisHash)))
	want := map[string]bool{}
	for _, k := range [][]string{{"batch", "s01:b1"}, {"head", "s01"}, {"site~seq", "s01", "0000000000000001"}} {
		key, _ := shim.CreateCompositeKey(k[0], k[1:])
		want[key] = true
	}
	if len(l.stub.state) != len(want) {
		t.Fatalf("state keys = %q", keys(l.stub.state))
	}
	for k := range want {
		if _, ok := l.stub.state[k]; !ok {
			t.Fatalf("missing key %q in %q", k, keys(l.stub.state))
		}
	}
	key, _ := shim.CreateCompositeKey("site~seq", []string{"s01", "0000000000000001"})
	if string(l.stub.state[key]) != "s01:b1" {
		t.Fatalf("seq index = %q", l.stub.state[key])
	}
}

func keys(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestGetBatchAbsentAndBadID(t *testing.T) {
	l := newLedger()
	got, err := l.getBatch("s01:none")
	if err != nil || got != "" {
		t.Fatalf("GetBatch absent = %q, %v", got, err)
	}
	_, err = l.getBatch("bad id")
	wantCode(t, err, "BAD_REQUEST")
	_, err = l.getHead("")
	wantCode(t, err, "BAD_REQUEST")
}

func TestListBatches(t *testing.T) {
	l := newLedger()
	prev := GenesisHash
	var recs []Record
	for i := 1; i <= 7; i++ {
		r := mustAnchor(t, l, enc(t, fields("s01", fmt.Sprintf("s01:b%02d", i), prev)))
		prev = r.HeaderHash
		recs = append(recs, r)
	}
	mustAnchor(t, l, enc(t, fields("s02", "s02:b01", GenesisHash)))

	list := func(from, limit int) []Record {
		t.Helper()
		out, err := l.list("s01", from, limit)
		if err != nil {
			t.Fatal(err)
		}
		var rs []Record
		if err := json.Unmarshal([]byte(out), &rs); err != nil {
			t.Fatalf("%q: %v", out, err)
		}
		return rs
	}
	ids := func(rs []Record) string {
		var s []string
		for _, r := range rs {
			s = append(s, fmt.Sprintf("%d:%s", r.Seq, r.BatchID))
		}
		return strings.Join(s, ",")
	}
	if got := list(1, 1000); len(got) != 7 || got[0] != recs[0] || got[6] != recs[6] {
		t.Fatalf("all = %s", ids(got))
	}
	if got := ids(list(0, 3)); got != "1:s01:b01,2:s01:b02,3:s01:b03" {
		t.Fatalf("page 1 = %s", got)
	}
	if got := ids(list(4, 3)); got != "4:s01:b04,5:s01:b05,6:s01:b06" {
		t.Fatalf("page 2 = %s", got)
	}
	if got := ids(list(7, 3)); got != "7:s01:b07" {
		t.Fatalf("page 3 = %s", got)
	}
	if out, err := l.list("s01", 8, 3); err != nil || out != "[]" {
		t.Fatalf("past end = %q, %v", out, err)
	}
	if out, err := l.list("nosite", 1, 10); err != nil || out != "[]" {
		t.Fatalf("unknown site = %q, %v", out, err)
	}
	if out, _ := l.list("s02", 1, 10); !strings.Contains(out, "s02:b01") || strings.Contains(out, "s01:") {
		t.Fatalf("s02 list = %s", out)
	}
	for _, limit := range []int{0, -1, 1001} {
		_, err := l.list("s01", 1, limit)
		wantCode(t, err, "BAD_REQUEST", "limit")
	}
	_, err := l.list("s01", -1, 10)
	wantCode(t, err, "BAD_REQUEST", "fromSeq")
	_, err = l.list("bad site", 1, 10)
	wantCode(t, err, "BAD_REQUEST", "site")
}

func TestErrorMessagesHaveNoSemicolon(t *testing.T) {
	l := newLedger()
	_, err := l.anchor(enc(t, fields("s01", "a;b", GenesisHash)))
	wantCode(t, err, "INVALID_HEADER", `"batch_id"`)
	_, err = l.anchor(`{;}`)
	wantCode(t, err, "INVALID_HEADER")
	_, err2 := l.getBatch("x;y")
	wantCode(t, err2, "BAD_REQUEST")
	for _, e := range []error{err, err2} {
		if strings.Contains(e.Error(), ";") {
			t.Fatalf("error %q contains ';'", e)
		}
	}
}
