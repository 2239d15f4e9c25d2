package oauth

import (
	"fmt"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"
)

func TestZZPreview(t *testing.T) {
	if os.Getenv("OAUTH_PREVIEW") == "" {
		t.Skip()
	}
	p := newTestPDS(t, pdsOptions{})
	scope := "atproto transition:generic repo:app.bsky.feed.post?action=create blob:image/* include:app.bsky.authCreatePosts?aud=did:web:api.bsky.app%23bsky_appview"
	site, _ := newClientSite(t, strings.Split(scope, " "))
	reqURI := p.par(t, site, newKey(t), scope)
	u := p.URL + "/oauth/authorize?" + url.Values{"client_id": {site.ID}, "request_uri": {reqURI}}.Encode()
	os.WriteFile("/tmp/oauth-preview-url", []byte(u), 0o644)
	fmt.Println(u)
	time.Sleep(40 * time.Second)
}
