package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"
)

// autocertDir is where ACME certificates and the account key are cached,
// in the data directory.
const autocertDir = "autocert"

// listen opens the server's listener: plain TCP on cfg.Listen, or, with
// PDS_TLS=autocert, TLS on cfg.HTTPSAddr with certificates from ACME, plus
// a server on cfg.HTTPAddr that answers http-01 challenges and redirects
// everything else to HTTPS (nil without TLS).
func (a *app) listen() (net.Listener, *http.Server, error) {
	cfg := a.cfg
	if cfg.TLS != "autocert" {
		ln, err := net.Listen("tcp", cfg.Listen)
		if err != nil {
			return nil, nil, fmt.Errorf("listening on %s: %w", cfg.Listen, err)
		}
		return ln, nil, nil
	}
	m, err := a.autocertManager()
	if err != nil {
		return nil, nil, err
	}
	ln, err := net.Listen("tcp", cfg.HTTPSAddr)
	if err != nil {
		return nil, nil, fmt.Errorf("PDS_TLS_HTTPS_ADDRESS %s: %w", cfg.HTTPSAddr, err)
	}
	tc := m.TLSConfig()
	tc.MinVersion = tls.VersionTLS12
	redirect := &http.Server{
		Addr:              cfg.HTTPAddr,
		Handler:           m.HTTPHandler(nil), // http-01 challenges, else a redirect to https
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       30 * time.Second,
	}
	return tls.NewListener(ln, tc), redirect, nil
}

// autocertManager obtains certificates for the hostname and, when it is a
// name under the hostname, the account's handle; no other name, so that
// nobody can make the server spend the CA's rate limits on random names.
func (a *app) autocertManager() (*autocert.Manager, error) {
	cfg := a.cfg
	dir := filepath.Join(cfg.DataDir, autocertDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	m := &autocert.Manager{
		Prompt: autocert.AcceptTOS,
		Cache:  autocert.DirCache(dir),
		Email:  cfg.ContactEmail,
		HostPolicy: func(ctx context.Context, host string) error {
			host = strings.ToLower(host)
			if host == cfg.Hostname {
				return nil
			}
			if acct, err := a.accounts.Account(ctx); err == nil && acct.Handle.String() == host && strings.HasSuffix(host, "."+cfg.Hostname) {
				return nil
			}
			return fmt.Errorf("pds: no certificate for %q (only %s and the account's handle under it)", host, cfg.Hostname)
		},
	}
	if cfg.ACMEDirectory != "" || cfg.ACMERootCAs != nil {
		hc := http.DefaultClient
		if cfg.ACMERootCAs != nil {
			tr := http.DefaultTransport.(*http.Transport).Clone()
			tr.TLSClientConfig = &tls.Config{RootCAs: cfg.ACMERootCAs}
			hc = &http.Client{Transport: tr, Timeout: 30 * time.Second}
		}
		m.Client = &acme.Client{DirectoryURL: cfg.ACMEDirectory, HTTPClient: hc}
		if m.Client.DirectoryURL == "" {
			m.Client.DirectoryURL = autocert.DefaultACMEDirectory
		}
	}
	return m, nil
}

// loadCAFile reads a PEM bundle of CA certificates.
func loadCAFile(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return pool, nil
}
