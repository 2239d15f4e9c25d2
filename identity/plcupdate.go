package identity

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/did-method-plc/go-didplc"
)

// LastOp fetches the newest operation of did: GET {URL}/{did}/log/last.
func (c *PLCClient) LastOp(ctx context.Context, did syntax.DID) (*didplc.RegularOp, error) {
	u, err := c.didURL(did)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u+"/log/last", nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrPLC, err)
	}
	resp, err := c.do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var op didplc.RegularOp
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxPLCResponse)).Decode(&op); err != nil {
		return nil, fmt.Errorf("%w: decoding the last operation of %s: %w", ErrPLC, did, err)
	}
	if op.Type != "plc_operation" {
		return nil, fmt.Errorf("%w: the last operation of %s is a %q", ErrPLC, did, op.Type)
	}
	return &op, nil
}

// PLCUpdateHandle returns a signed operation that follows last and changes
// only the handle (alsoKnownAs), as the reference's updateHandle does.
func PLCUpdateHandle(last *didplc.RegularOp, rotationKey atcrypto.PrivateKey, handle syntax.Handle) (*didplc.RegularOp, error) {
	prev := last.CID().String()
	op := didplc.RegularOp{
		Type:                "plc_operation",
		RotationKeys:        append([]string(nil), last.RotationKeys...),
		VerificationMethods: map[string]string{},
		AlsoKnownAs:         []string{"at://" + handle.Normalize().String()},
		Services:            map[string]didplc.OpService{},
		Prev:                &prev,
	}
	for k, v := range last.VerificationMethods {
		op.VerificationMethods[k] = v
	}
	for k, v := range last.Services {
		op.Services[k] = v
	}
	// Keep any other aliases after the handle.
	for _, aka := range last.AlsoKnownAs {
		if len(aka) > 5 && aka[:5] == "at://" {
			continue
		}
		op.AlsoKnownAs = append(op.AlsoKnownAs, aka)
	}
	if err := op.Sign(rotationKey); err != nil {
		return nil, fmt.Errorf("identity: signing PLC update: %w", err)
	}
	return &op, nil
}
