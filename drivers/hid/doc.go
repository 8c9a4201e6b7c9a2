// Package hid decodes the input reports of USB HID barcode scanners and
// scales. It works on report bytes only; opening devices is the job of
// package usbhid, so every decoder here is tested without hardware.
//
// # Keyboard-wedge scanners (boot keyboard reports)
//
// Each report is 8 bytes: [modifiers][reserved][key1..key6]. Modifier bits:
// 0 left Ctrl, 1 left Shift, 2 left Alt, 3 left GUI, 4 right Ctrl, 5 right
// Shift, 6 right Alt (AltGr), 7 right GUI. Key bytes are usage ids of key
// positions (a–z 0x04–0x1D, 1–0 0x1E–0x27, Enter 0x28, Tab 0x2B, space 0x2C,
// …); which character a position means depends on the keyboard layout the
// scanner emulates, so KeyboardDecoder is built for a layout ("us" or "de",
// German QWERTZ with AltGr). A key counts once when it appears in a report
// and was not in the previous one; scanners send an all-zero release report
// after each key. Enter or Tab end a code. Ctrl+] (the key right of P on a US
// keyboard), which many scanners send for the GS1 separator, becomes ASCII
// GS (0x1D); this mapping is documented by vendors but unverified across
// models.
//
// # HID POS scanners (usage page 0x8C)
//
// Honeywell-style 64-byte input reports: [report id][data length][3-byte AIM
// symbology id, e.g. "]C1"][56 data bytes][vendor code id][0][more-follows].
// POSScanner concatenates the data of reports until more-follows is 0 and
// keeps the AIM id of the first report.
//
// # HID POS scales (usage page 0x8D)
//
// 6-byte input reports: [report id 3][status][unit][exponent int8][weight
// low][weight high]; weight = uint16 × 10^exponent. Status: 1 fault, 2 stable
// zero, 3 in motion, 4 stable weight, 5 under zero, 6 over capacity, 7 needs
// calibration, 8 needs re-zeroing. Units: 1 mg, 2 g, 3 kg, 4 carat, 7 troy
// ounce, 11 oz, 12 lb. Example: 03 04 0B FF 2C 01 is 30.0 oz, stable. The
// first report after a device is opened may be stale; ScaleDecoder drops it.
package hid
