// Package netutil claims ports with error messages that say which port it was
// and what to do about it.
package netutil

import (
	"errors"
	"fmt"
	"net"
	"strconv"
)

// Listen opens a TCP listener on host:port; what names the port in the error.
func Listen(host string, port int, what string) (net.Listener, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		return nil, fmt.Errorf("%s %s:%d is not available (%v); stop whatever uses it or choose another port", what, host, port, innermost(err))
	}
	return l, nil
}

// CheckPortFree fails with the same message as Listen when host:port cannot be bound.
func CheckPortFree(host string, port int, what string) error {
	l, err := Listen(host, port, what)
	if err != nil {
		return err
	}
	return l.Close()
}

// innermost returns e.g. "address already in use" instead of the whole
// "listen tcp ...: bind: ..." chain, whose address the message already names.
func innermost(err error) error {
	for {
		next := errors.Unwrap(err)
		if next == nil {
			return err
		}
		err = next
	}
}
