// Package lexicons embeds the com.atproto, app.bsky and chat.bsky lexicon
// schemas (MIT, from bluesky-social/atproto) used to validate records.
package lexicons

import "embed"

// FS holds the lexicon JSON files under app/, chat/ and com/.
//
//go:embed app chat com
var FS embed.FS
