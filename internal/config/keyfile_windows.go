//go:build windows

package config

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/windows"
)

// broadSIDs are groups whose read access makes a key readable by anyone
// on the machine.
var broadSIDs = map[string]string{
	"S-1-1-0":      "Everyone",
	"S-1-5-11":     "Authenticated Users",
	"S-1-5-32-545": "Users",
	"S-1-5-32-546": "Guests",
}

const readAccess = windows.FILE_READ_DATA | windows.GENERIC_READ | windows.GENERIC_ALL

// keyFileProblem looks at the file's ACL (Windows has no mode bits): a key
// that Everyone, Users, Authenticated Users or Guests may read is refused.
func keyFileProblem(path string) string {
	sd, err := windows.GetNamedSecurityInfo(path, windows.SE_FILE_OBJECT, windows.DACL_SECURITY_INFORMATION)
	if err != nil {
		return ""
	}
	dacl, _, err := sd.DACL()
	if err != nil {
		return ""
	}
	if dacl == nil {
		return fmt.Sprintf("%s has no access list (everyone may read it): restrict it to the service account and Administrators", path)
	}
	for i := uint32(0); i < uint32(dacl.AceCount); i++ {
		var ace *windows.ACCESS_ALLOWED_ACE
		if err := windows.GetAce(dacl, i, &ace); err != nil {
			continue
		}
		if ace.Header.AceType != windows.ACCESS_ALLOWED_ACE_TYPE || ace.Mask&readAccess == 0 {
			continue
		}
		sid := (*windows.SID)(unsafe.Pointer(&ace.SidStart))
		if name, broad := broadSIDs[sid.String()]; broad {
			return fmt.Sprintf("%s is readable by %s: a private key must be readable by the service account and Administrators only (icacls %s /inheritance:r /grant:r SYSTEM:R Administrators:R)", path, name, path)
		}
	}
	return ""
}
