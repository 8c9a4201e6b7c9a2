package app

import (
	"testing"

	"github.com/mailroomd/mailroomd/internal/config"
)

// A remote config that changes only the photos settings is not applied to
// the front alone: the uploader and OCR read them at the start.
func TestPhotosSettingsRestartEverything(t *testing.T) {
	base := &config.Config{Photos: config.Photos{MaxSizeKB: 8192, MaxTotalMB: 1024, LongEdge: 1600}}
	a := &App{base: base}
	same := *base
	same.Web.Listen = "127.0.0.1:8080"
	if !a.FrontOnly(&same) {
		t.Error("a change of the page alone is not front-only")
	}
	photos := same
	photos.Photos.MaxTotalMB = 10
	if a.FrontOnly(&photos) {
		t.Error("a change of photos.max_total_mb is applied to the front alone")
	}
}
