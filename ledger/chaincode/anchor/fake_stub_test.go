package anchor

import (
	"errors"
	"fmt"

	"github.com/hyperledger/fabric-chaincode-go/v2/shim"
	"github.com/hyperledger/fabric-contract-api-go/v2/contractapi"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// fakeStub is an in-memory stand-in for the peer. Like Fabric, reads within a transaction see
// only committed state; writes and the event are buffered until commit(), and dropped on rollback().
// Methods the contract does not use are left to the embedded (nil) interface and would panic.
type fakeStub struct {
	shim.ChaincodeStubInterface

	state   map[string][]byte
	pending map[string][]byte
	txNum   int
	txID    string
	txTime  *timestamppb.Timestamp
	args    [][]byte
	event   *eventRec
	events  []eventRec
}

type eventRec struct {
	name    string
	payload []byte
}

func newFakeStub() *fakeStub {
	s := &fakeStub{state: map[string][]byte{}}
	s.begin()
	return s
}

// begin starts a new transaction with a fresh tx id and timestamp.
func (s *fakeStub) begin() {
	s.txNum++
	s.txID = fmt.Sprintf("tx%04d", s.txNum)
	s.txTime = &timestamppb.Timestamp{Seconds: 1_780_000_000 + int64(s.txNum), Nanos: 123_456_789}
	s.pending = map[string][]byte{}
	s.event = nil
}

func (s *fakeStub) commit() {
	for k, v := range s.pending {
		s.state[k] = v
	}
	if s.event != nil {
		s.events = append(s.events, *s.event)
	}
	s.begin()
}

func (s *fakeStub) rollback() { s.begin() }

func (s *fakeStub) GetState(key string) ([]byte, error) {
	v, ok := s.state[key]
	if !ok {
		return nil, nil
	}
	return append([]byte(nil), v...), nil
}

func (s *fakeStub) PutState(key string, value []byte) error {
	if key == "" {
		return errors.New("empty key")
	}
	s.pending[key] = append([]byte(nil), value...)
	return nil
}

func (s *fakeStub) CreateCompositeKey(objectType string, attributes []string) (string, error) {
	return shim.CreateCompositeKey(objectType, attributes)
}

func (s *fakeStub) SetEvent(name string, payload []byte) error {
	if name == "" {
		return errors.New("event name can not be empty string")
	}
	s.event = &eventRec{name: name, payload: append([]byte(nil), payload...)}
	return nil
}

func (s *fakeStub) GetTxID() string                                 { return s.txID }
func (s *fakeStub) GetChannelID() string                            { return "wattproof" }
func (s *fakeStub) GetTxTimestamp() (*timestamppb.Timestamp, error) { return s.txTime, nil }
func (s *fakeStub) GetCreator() ([]byte, error)                     { return nil, errors.New("no creator in fake") }
func (s *fakeStub) GetArgs() [][]byte                               { return s.args }

func (s *fakeStub) GetStringArgs() []string {
	out := make([]string, len(s.args))
	for i, a := range s.args {
		out[i] = string(a)
	}
	return out
}

func (s *fakeStub) GetFunctionAndParameters() (string, []string) {
	a := s.GetStringArgs()
	if len(a) == 0 {
		return "", nil
	}
	return a[0], a[1:]
}

// ledger bundles the contract with a fake stub; its methods run one transaction each and commit
// it when it succeeds (the peer would not commit a failed proposal).
type ledger struct {
	c    *Contract
	stub *fakeStub
}

func newLedger() *ledger { return &ledger{c: NewContract(), stub: newFakeStub()} }

func (l *ledger) ctx() contractapi.TransactionContextInterface {
	ctx := &contractapi.TransactionContext{}
	ctx.SetStub(l.stub)
	return ctx
}

func (l *ledger) finish(out string, err error) (string, error) {
	if err != nil {
		l.stub.rollback()
	} else {
		l.stub.commit()
	}
	return out, err
}

func (l *ledger) anchor(header string) (string, error) {
	return l.finish(l.c.AnchorBatch(l.ctx(), header))
}

func (l *ledger) getBatch(id string) (string, error)  { return l.finish(l.c.GetBatch(l.ctx(), id)) }
func (l *ledger) getHead(site string) (string, error) { return l.finish(l.c.GetHead(l.ctx(), site)) }
func (l *ledger) list(site string, from, limit int) (string, error) {
	return l.finish(l.c.ListBatches(l.ctx(), site, from, limit))
}
