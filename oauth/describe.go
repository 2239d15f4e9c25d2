package oauth

import (
	"fmt"
	"strings"

	atpauth "github.com/bluesky-social/indigo/atproto/auth"
	"github.com/bluesky-social/indigo/atproto/lexicon"
)

// Plain words for what each scope lets an app do, for the consent and
// account pages. Every token of the scope gets a line, so nothing granted
// goes unmentioned.

// collectionNames names the record types people meet most.
var collectionNames = map[string]string{
	"app.bsky.feed.post":          "posts",
	"app.bsky.feed.like":          "likes",
	"app.bsky.feed.repost":        "reposts",
	"app.bsky.graph.follow":       "follows",
	"app.bsky.graph.block":        "blocks",
	"app.bsky.graph.list":         "lists",
	"app.bsky.graph.listitem":     "list members",
	"app.bsky.actor.profile":      "your profile",
	"app.bsky.feed.threadgate":    "who can reply to your posts",
	"app.bsky.feed.postgate":      "who can quote your posts",
	"app.bsky.feed.generator":     "your custom feeds",
	"app.bsky.graph.starterpack":  "starter packs",
	"chat.bsky.actor.declaration": "your chat settings",
}

func collectionName(c string) string {
	if c == "*" {
		return "records of every kind"
	}
	if n, ok := collectionNames[c]; ok {
		return n + " (" + c + ")"
	}
	return "records of type " + c
}

func verbs(actions []string) string {
	if len(actions) == 0 {
		actions = []string{"create", "update", "delete"}
	}
	words := map[string]string{"create": "create", "update": "change", "delete": "delete"}
	var out []string
	for _, a := range actions {
		out = append(out, words[a])
	}
	return joinWords(out)
}

func joinWords(w []string) string {
	switch len(w) {
	case 0:
		return ""
	case 1:
		return w[0]
	}
	return strings.Join(w[:len(w)-1], ", ") + " and " + w[len(w)-1]
}

// mimeName names a blob accept pattern in words.
func mimeName(accept string) string {
	switch accept {
	case "*/*":
		return "files of any type"
	case "image/*":
		return "images"
	case "video/*":
		return "videos"
	case "audio/*":
		return "audio"
	}
	return accept + " files"
}

// commonPrefix is the longest dot-ended prefix the NSIDs share.
func commonPrefix(ids []string) string {
	prefix := ids[0]
	for _, id := range ids[1:] {
		for !strings.HasPrefix(id, prefix) {
			prefix = prefix[:len(prefix)-1]
		}
	}
	if i := strings.LastIndex(prefix, "."); i >= 0 {
		return prefix[:i+1]
	}
	return ""
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

func describePermission(p atpauth.Permission) permissionView {
	switch p.Resource {
	case "repo":
		var names []string
		for _, c := range p.Collection {
			names = append(names, collectionName(c))
		}
		return permissionView{Title: capitalize(verbs(p.Action)) + " " + joinWords(names),
			Detail: "These records are public: anyone can see what the app writes in your name."}
	case "blob":
		var kinds []string
		for _, a := range p.Accept {
			kinds = append(kinds, mimeName(a))
		}
		what := joinWords(kinds)
		return permissionView{Title: "Upload " + what, Detail: "Images, video and other files you attach to records."}
	case "rpc":
		svc := p.Audience
		if svc == "*" {
			svc = "any service"
		}
		methods := joinWords(p.Endpoint)
		switch {
		case len(p.Endpoint) == 1 && p.Endpoint[0] == "*":
			methods = "any method"
		case len(p.Endpoint) > 3:
			methods = fmt.Sprintf("%d methods of %s*", len(p.Endpoint), commonPrefix(p.Endpoint))
		}
		return permissionView{Title: "Call " + methods + " at " + svc + " in your name",
			Detail: "Your server vouches for the app when it talks to that service."}
	case "account":
		act := "read"
		if len(p.Action) > 0 {
			act = p.Action[0]
		}
		switch {
		case p.Attribute == "email" && act == "manage":
			return permissionView{Title: "See and change your email address"}
		case p.Attribute == "email":
			return permissionView{Title: "See your email address"}
		case p.Attribute == "repo" && act == "manage":
			return permissionView{Title: "Replace your whole repository", Risky: true, Detail: "Used to move an account between servers: it can overwrite everything you have posted."}
		default:
			return permissionView{Title: "See the state of your repository"}
		}
	case "identity":
		if p.Attribute == "handle" {
			return permissionView{Title: "Change your handle", Detail: "Your @name, as others see it."}
		}
		return permissionView{Title: "Control your identity", Risky: true, Detail: "Change your handle, keys and hosting server: full control of who your account is. Only allow this for an app you trust completely."}
	}
	return permissionView{Title: p.ScopeString()}
}

// describe lists what perms allow, one line per scope token.
func describe(perms *Permissions, catalog lexicon.Catalog) []permissionView {
	var out []permissionView
	for _, tok := range perms.tokens {
		var v permissionView
		switch tok {
		case ScopeAtproto:
			v = permissionView{Title: "Know who you are", Detail: "Your handle and your account's DID, which are public."}
		case ScopeTransitionGeneric:
			v = permissionView{Title: "Act as you on Bluesky, like an app password",
				Detail: "Create, change and delete all your records (posts, likes, follows, profile), upload files, and use Bluesky services in your name. Not your direct messages, email, password or identity."}
		case ScopeTransitionChat:
			v = permissionView{Title: "Read and send your direct messages"}
		case ScopeTransitionEmail:
			v = permissionView{Title: "See your email address"}
		default:
			perm, err := atpauth.ParsePermissionString(tok)
			if err != nil {
				v = permissionView{Title: tok}
				break
			}
			if perm.Resource == "include" {
				v = permissionView{Title: "Permission set " + perm.NSID}
				if set, err := permissionSet(perm.NSID, catalog); err == nil {
					if set.Title != nil {
						v.Title = *set.Title
					}
					var parts []string
					if set.Detail != nil {
						parts = append(parts, *set.Detail)
					}
					if exp, err := expandInclude(perm, catalog); err == nil {
						for _, e := range exp {
							parts = append(parts, describePermission(e).Title+".")
						}
					}
					v.Detail = strings.Join(parts, " ")
				}
				break
			}
			v = describePermission(*perm)
		}
		v.Scope = tok
		out = append(out, v)
	}
	return out
}
