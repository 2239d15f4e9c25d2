package account

import (
	"context"
	"fmt"

	"github.com/did-method-plc/go-didplc"
	"github.com/pdsbox/pds/auth"
	"github.com/pdsbox/pds/identity"
	bolt "go.etcd.io/bbolt"
)

// SignPLCOperation signs, with this server's PLC rotation key, an operation
// that follows the DID's last one with changes applied
// (signPlcOperation, migration out). token must be the live plc_operation
// token (requestPlcOperationSignature, or `pds account plc-token`); it is
// used up only when the operation is signed.
func (s *Service) SignPLCOperation(ctx context.Context, token string, ch identity.PLCChanges) (*didplc.RegularOp, error) {
	if s.cfg.Tokens == nil {
		return nil, ErrNoTokenStore
	}
	st, err := s.Lifecycle(ctx)
	if err != nil {
		return nil, err
	}
	if st.DID.Method() != "plc" {
		return nil, fmt.Errorf("%w: %s is not a did:plc", identity.ErrInvalidDID, st.DID)
	}
	if s.cfg.PLC == nil || s.cfg.RotationKey == nil {
		return nil, fmt.Errorf("%w: no PLC directory or rotation key configured", ErrDIDUpdate)
	}
	if err := s.cfg.Tokens.Check(ctx, auth.PurposePLCOperation, token); err != nil {
		return nil, err
	}
	last, err := s.cfg.PLC.LastOp(ctx, st.DID)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrDIDUpdate, err)
	}
	op, err := identity.PLCUpdate(last, s.cfg.RotationKey, ch)
	if err != nil {
		return nil, err
	}
	if err := s.cfg.Tokens.Consume(ctx, auth.PurposePLCOperation, token); err != nil {
		return nil, err
	}
	s.cfg.Log.Info("PLC operation signed", "did", st.DID)
	return op, nil
}

// SubmitPLCOperation checks that op keeps this server as the account's PDS,
// with our signing and rotation keys and the account's handle
// (submitPlcOperation, migration in), submits it to the directory, and
// appends #identity (without a handle, as the reference does).
func (s *Service) SubmitPLCOperation(ctx context.Context, op *didplc.RegularOp) error {
	st, err := s.Lifecycle(ctx)
	if err != nil {
		return err
	}
	if st.DID.Method() != "plc" {
		return fmt.Errorf("%w: %s is not a did:plc", identity.ErrInvalidDID, st.DID)
	}
	if s.cfg.PLC == nil || s.cfg.RotationKey == nil {
		return fmt.Errorf("%w: no PLC directory or rotation key configured", ErrDIDUpdate)
	}
	pub, err := s.PublicKey()
	if err != nil {
		return err
	}
	rot, err := s.cfg.RotationKey.PublicKey()
	if err != nil {
		return err
	}
	want := identity.PLCExpect{RotationKey: rot.DIDKey(), SigningKey: pub.DIDKey(), Endpoint: s.cfg.PublicURL, Handle: st.Handle.String()}
	if err := identity.CheckPLCSubmission(op, want); err != nil {
		return err
	}
	if err := s.cfg.PLC.Submit(ctx, st.DID, op); err != nil {
		return fmt.Errorf("%w: %w", ErrDIDUpdate, err)
	}
	if s.cfg.Events != nil {
		err := s.db.Update(func(tx *bolt.Tx) error {
			_, err := s.cfg.Events.AppendIdentity(tx, st.DID, "")
			return err
		})
		if err != nil {
			return err
		}
	}
	s.cfg.Log.Info("PLC operation submitted", "did", st.DID)
	return nil
}
