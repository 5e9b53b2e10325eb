package linearizability

import (
	"testing"

	"github.com/anishathalye/porcupine"
)

func op(client int, call, ret int64, in Input, out Output) porcupine.Operation {
	return porcupine.Operation{ClientId: client, Call: call, Return: ret, Input: in, Output: out}
}

// The checker must reject what a deposed leader would serve: a read, after a
// write was acknowledged, that returns the older value.
func TestModelRejectsStaleRead(t *testing.T) {
	h := []porcupine.Operation{
		op(0, 0, 10, Input{Kind: Put, Key: "k", Value: "a"}, Output{}),
		op(0, 20, 30, Input{Kind: Put, Key: "k", Value: "b"}, Output{}),
		op(1, 40, 50, Input{Kind: Get, Key: "k"}, Output{Value: "a"}),
	}
	if porcupine.CheckOperations(RegisterModel, h) {
		t.Fatal("a stale read was accepted as linearizable")
	}
	h[2].Output = Output{Value: "b"}
	if !porcupine.CheckOperations(RegisterModel, h) {
		t.Fatal("a fresh read was rejected")
	}
}

// A write whose outcome is unknown may or may not have happened.
func TestModelUnknownWriteIsMaybe(t *testing.T) {
	unknownPut := op(0, 0, 1<<62, Input{Kind: Put, Key: "k", Value: "x"}, Output{Unknown: true})
	for _, seen := range []string{"", "x"} {
		h := []porcupine.Operation{unknownPut, op(1, 10, 20, Input{Kind: Get, Key: "k"}, Output{Value: seen})}
		if !porcupine.CheckOperations(RegisterModel, h) {
			t.Fatalf("read of %q after an unknown put was rejected", seen)
		}
	}
	h := []porcupine.Operation{unknownPut, op(1, 10, 20, Input{Kind: Get, Key: "k"}, Output{Value: "y"})}
	if porcupine.CheckOperations(RegisterModel, h) {
		t.Fatal("a value nobody wrote was accepted")
	}
}

func TestModelCAS(t *testing.T) {
	ok := []porcupine.Operation{
		op(0, 0, 10, Input{Kind: CAS, Key: "k", Expect: "", Value: "a"}, Output{Succeeded: true}),
		op(1, 20, 30, Input{Kind: CAS, Key: "k", Expect: "", Value: "b"}, Output{Succeeded: false}),
		op(1, 40, 50, Input{Kind: CAS, Key: "k", Expect: "a", Value: "c"}, Output{Succeeded: true}),
		op(0, 60, 70, Input{Kind: Get, Key: "k"}, Output{Value: "c"}),
		op(0, 80, 90, Input{Kind: Delete, Key: "k"}, Output{}),
		op(1, 100, 110, Input{Kind: Get, Key: "k"}, Output{Value: ""}),
	}
	if !porcupine.CheckOperations(RegisterModel, ok) {
		t.Fatal("a valid CAS history was rejected")
	}
	bad := append([]porcupine.Operation{}, ok[:2]...)
	bad[1].Output = Output{Succeeded: true} // two creates of the same key both succeeded
	if porcupine.CheckOperations(RegisterModel, bad) {
		t.Fatal("two successful create-if-absent CAS were accepted")
	}
}
