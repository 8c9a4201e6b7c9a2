package barcode

// Check-digit algorithms. Each takes the data characters without the check
// character and returns the expected check digit, or -1 if a character is
// outside the alphabet of the algorithm.

// gs1Mod10 weights digits 3,1,3,… from the rightmost data digit leftwards.
func gs1Mod10(d string) int {
	sum := 0
	for i := len(d) - 1; i >= 0; i-- {
		c := d[i]
		if c < '0' || c > '9' {
			return -1
		}
		w := 1
		if (len(d)-1-i)%2 == 0 {
			w = 3
		}
		sum += int(c-'0') * w
	}
	return (10 - sum%10) % 10
}

// upsValue maps a character to its value in the UPS-style check: digits are
// themselves, letters (ASCII-3) mod 10.
func upsValue(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'A' && c <= 'Z':
		return (int(c) - 3) % 10
	}
	return -1
}

// upsMod10 weights values 1,2,1,2,… from the left (no digit sum).
func upsMod10(d string) int {
	sum := 0
	for i := 0; i < len(d); i++ {
		v := upsValue(d[i])
		if v < 0 {
			return -1
		}
		if i%2 == 1 {
			v *= 2
		}
		sum += v
	}
	return (10 - sum%10) % 10
}

// fedexWeighted weights digits 3,1,7 repeating from the left; mod 11 mod 10.
func fedexWeighted(d string) int {
	weights := [3]int{3, 1, 7}
	sum := 0
	for i := 0; i < len(d); i++ {
		c := d[i]
		if c < '0' || c > '9' {
			return -1
		}
		sum += int(c-'0') * weights[i%3]
	}
	return sum % 11 % 10
}

// mod7 is the number formed by the digits, mod 7.
func mod7(d string) int {
	r := 0
	for i := 0; i < len(d); i++ {
		c := d[i]
		if c < '0' || c > '9' {
			return -1
		}
		r = (r*10 + int(c-'0')) % 7
	}
	return r
}

// s10 is the UPU S10 check over the 8 serial digits.
func s10(d string) int {
	weights := [8]int{8, 6, 4, 2, 3, 5, 9, 7}
	if len(d) != 8 {
		return -1
	}
	sum := 0
	for i := 0; i < 8; i++ {
		c := d[i]
		if c < '0' || c > '9' {
			return -1
		}
		sum += int(c-'0') * weights[i]
	}
	switch r := sum % 11; r {
	case 0:
		return 5
	case 1:
		return 0
	default:
		return 11 - r
	}
}

// deutschePost weights digits 4,9,4,9,… from the left.
func deutschePost(d string) int {
	sum := 0
	for i := 0; i < len(d); i++ {
		c := d[i]
		if c < '0' || c > '9' {
			return -1
		}
		w := 4
		if i%2 == 1 {
			w = 9
		}
		sum += int(c-'0') * w
	}
	return (10 - sum%10) % 10
}

// holds reports whether the last character of s is the check digit that
// alg computes over data.
func holds(alg func(string) int, data string, check byte) bool {
	want := alg(data)
	return want >= 0 && check >= '0' && check <= '9' && int(check-'0') == want
}
