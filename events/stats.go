package events

// BytesSent is the total size of the event frames consumers have accepted
// (replayed and live), since the sequencer was opened: with Subscribers,
// what the firehose costs in bandwidth.
func (s *Sequencer) BytesSent() int64 { return s.sent.Load() }

// countSent wraps a consumer's send so that every frame it accepts counts
// towards BytesSent.
func (s *Sequencer) countSent(send func([]byte) error) func([]byte) error {
	return func(frame []byte) error {
		if err := send(frame); err != nil {
			return err
		}
		s.sent.Add(int64(len(frame)))
		return nil
	}
}
