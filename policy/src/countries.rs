//! ISO 3166-1 alpha-2 country codes and the continent each belongs to (the GeoNames
//! assignment: Turkey, Armenia, Azerbaijan and Georgia in Asia; Russia and Cyprus in Europe;
//! Timor-Leste in Oceania), used to validate and expand `location` destinations.

use crate::model::CountryCode;

/// A continent, as `location` accepts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Continent {
    Africa,
    Antarctica,
    Asia,
    Europe,
    NorthAmerica,
    Oceania,
    SouthAmerica,
}

impl Continent {
    /// Every continent.
    pub const ALL: [Continent; 7] = [
        Continent::Africa,
        Continent::Antarctica,
        Continent::Asia,
        Continent::Europe,
        Continent::NorthAmerica,
        Continent::Oceania,
        Continent::SouthAmerica,
    ];

    /// The two-letter continent code (`AF`, `AN`, `AS`, `EU`, `NA`, `OC`, `SA`).
    pub fn code(self) -> &'static str {
        match self {
            Continent::Africa => "AF",
            Continent::Antarctica => "AN",
            Continent::Asia => "AS",
            Continent::Europe => "EU",
            Continent::NorthAmerica => "NA",
            Continent::Oceania => "OC",
            Continent::SouthAmerica => "SA",
        }
    }

    /// The config name (`north_america`).
    pub fn name(self) -> &'static str {
        match self {
            Continent::Africa => "africa",
            Continent::Antarctica => "antarctica",
            Continent::Asia => "asia",
            Continent::Europe => "europe",
            Continent::NorthAmerica => "north_america",
            Continent::Oceania => "oceania",
            Continent::SouthAmerica => "south_america",
        }
    }

    /// By name, case-insensitive; `-` and spaces count as `_` (`North America`).
    pub fn from_name(s: &str) -> Option<Continent> {
        let norm: String = s
            .chars()
            .map(|c| match c {
                '-' | ' ' => '_',
                c => c.to_ascii_lowercase(),
            })
            .collect();
        Continent::ALL.into_iter().find(|c| c.name() == norm)
    }

    /// By two-letter continent code, case-insensitive.
    pub fn from_code(s: &str) -> Option<Continent> {
        Continent::ALL
            .into_iter()
            .find(|c| c.code().eq_ignore_ascii_case(s))
    }

    /// The countries on this continent, in code order.
    pub fn countries(self) -> impl Iterator<Item = CountryCode> {
        COUNTRIES
            .iter()
            .filter(move |(_, c)| *c == self)
            .map(|(code, _)| CountryCode(*code))
    }
}

/// Is `code` an assigned ISO 3166-1 alpha-2 code?
pub fn is_country(code: CountryCode) -> bool {
    COUNTRIES.binary_search_by(|(c, _)| c.cmp(&code.0)).is_ok()
}

/// The continent of an assigned country code.
pub fn continent_of(code: CountryCode) -> Option<Continent> {
    COUNTRIES
        .binary_search_by(|(c, _)| c.cmp(&code.0))
        .ok()
        .map(|i| COUNTRIES[i].1)
}

use Continent::{
    Africa as AF_, Antarctica as AN_, Asia as AS_, Europe as EU_, NorthAmerica as NA_,
    Oceania as OC_, SouthAmerica as SA_,
};

/// Every officially assigned ISO 3166-1 alpha-2 code (249), sorted, with its continent.
#[rustfmt::skip]
pub const COUNTRIES: [([u8; 2], Continent); 249] = [
    (*b"AD", EU_), (*b"AE", AS_), (*b"AF", AS_), (*b"AG", NA_), (*b"AI", NA_), (*b"AL", EU_),
    (*b"AM", AS_), (*b"AO", AF_), (*b"AQ", AN_), (*b"AR", SA_), (*b"AS", OC_), (*b"AT", EU_),
    (*b"AU", OC_), (*b"AW", NA_), (*b"AX", EU_), (*b"AZ", AS_), (*b"BA", EU_), (*b"BB", NA_),
    (*b"BD", AS_), (*b"BE", EU_), (*b"BF", AF_), (*b"BG", EU_), (*b"BH", AS_), (*b"BI", AF_),
    (*b"BJ", AF_), (*b"BL", NA_), (*b"BM", NA_), (*b"BN", AS_), (*b"BO", SA_), (*b"BQ", NA_),
    (*b"BR", SA_), (*b"BS", NA_), (*b"BT", AS_), (*b"BV", AN_), (*b"BW", AF_), (*b"BY", EU_),
    (*b"BZ", NA_), (*b"CA", NA_), (*b"CC", AS_), (*b"CD", AF_), (*b"CF", AF_), (*b"CG", AF_),
    (*b"CH", EU_), (*b"CI", AF_), (*b"CK", OC_), (*b"CL", SA_), (*b"CM", AF_), (*b"CN", AS_),
    (*b"CO", SA_), (*b"CR", NA_), (*b"CU", NA_), (*b"CV", AF_), (*b"CW", NA_), (*b"CX", AS_),
    (*b"CY", EU_), (*b"CZ", EU_), (*b"DE", EU_), (*b"DJ", AF_), (*b"DK", EU_), (*b"DM", NA_),
    (*b"DO", NA_), (*b"DZ", AF_), (*b"EC", SA_), (*b"EE", EU_), (*b"EG", AF_), (*b"EH", AF_),
    (*b"ER", AF_), (*b"ES", EU_), (*b"ET", AF_), (*b"FI", EU_), (*b"FJ", OC_), (*b"FK", SA_),
    (*b"FM", OC_), (*b"FO", EU_), (*b"FR", EU_), (*b"GA", AF_), (*b"GB", EU_), (*b"GD", NA_),
    (*b"GE", AS_), (*b"GF", SA_), (*b"GG", EU_), (*b"GH", AF_), (*b"GI", EU_), (*b"GL", NA_),
    (*b"GM", AF_), (*b"GN", AF_), (*b"GP", NA_), (*b"GQ", AF_), (*b"GR", EU_), (*b"GS", AN_),
    (*b"GT", NA_), (*b"GU", OC_), (*b"GW", AF_), (*b"GY", SA_), (*b"HK", AS_), (*b"HM", AN_),
    (*b"HN", NA_), (*b"HR", EU_), (*b"HT", NA_), (*b"HU", EU_), (*b"ID", AS_), (*b"IE", EU_),
    (*b"IL", AS_), (*b"IM", EU_), (*b"IN", AS_), (*b"IO", AS_), (*b"IQ", AS_), (*b"IR", AS_),
    (*b"IS", EU_), (*b"IT", EU_), (*b"JE", EU_), (*b"JM", NA_), (*b"JO", AS_), (*b"JP", AS_),
    (*b"KE", AF_), (*b"KG", AS_), (*b"KH", AS_), (*b"KI", OC_), (*b"KM", AF_), (*b"KN", NA_),
    (*b"KP", AS_), (*b"KR", AS_), (*b"KW", AS_), (*b"KY", NA_), (*b"KZ", AS_), (*b"LA", AS_),
    (*b"LB", AS_), (*b"LC", NA_), (*b"LI", EU_), (*b"LK", AS_), (*b"LR", AF_), (*b"LS", AF_),
    (*b"LT", EU_), (*b"LU", EU_), (*b"LV", EU_), (*b"LY", AF_), (*b"MA", AF_), (*b"MC", EU_),
    (*b"MD", EU_), (*b"ME", EU_), (*b"MF", NA_), (*b"MG", AF_), (*b"MH", OC_), (*b"MK", EU_),
    (*b"ML", AF_), (*b"MM", AS_), (*b"MN", AS_), (*b"MO", AS_), (*b"MP", OC_), (*b"MQ", NA_),
    (*b"MR", AF_), (*b"MS", NA_), (*b"MT", EU_), (*b"MU", AF_), (*b"MV", AS_), (*b"MW", AF_),
    (*b"MX", NA_), (*b"MY", AS_), (*b"MZ", AF_), (*b"NA", AF_), (*b"NC", OC_), (*b"NE", AF_),
    (*b"NF", OC_), (*b"NG", AF_), (*b"NI", NA_), (*b"NL", EU_), (*b"NO", EU_), (*b"NP", AS_),
    (*b"NR", OC_), (*b"NU", OC_), (*b"NZ", OC_), (*b"OM", AS_), (*b"PA", NA_), (*b"PE", SA_),
    (*b"PF", OC_), (*b"PG", OC_), (*b"PH", AS_), (*b"PK", AS_), (*b"PL", EU_), (*b"PM", NA_),
    (*b"PN", OC_), (*b"PR", NA_), (*b"PS", AS_), (*b"PT", EU_), (*b"PW", OC_), (*b"PY", SA_),
    (*b"QA", AS_), (*b"RE", AF_), (*b"RO", EU_), (*b"RS", EU_), (*b"RU", EU_), (*b"RW", AF_),
    (*b"SA", AS_), (*b"SB", OC_), (*b"SC", AF_), (*b"SD", AF_), (*b"SE", EU_), (*b"SG", AS_),
    (*b"SH", AF_), (*b"SI", EU_), (*b"SJ", EU_), (*b"SK", EU_), (*b"SL", AF_), (*b"SM", EU_),
    (*b"SN", AF_), (*b"SO", AF_), (*b"SR", SA_), (*b"SS", AF_), (*b"ST", AF_), (*b"SV", NA_),
    (*b"SX", NA_), (*b"SY", AS_), (*b"SZ", AF_), (*b"TC", NA_), (*b"TD", AF_), (*b"TF", AN_),
    (*b"TG", AF_), (*b"TH", AS_), (*b"TJ", AS_), (*b"TK", OC_), (*b"TL", OC_), (*b"TM", AS_),
    (*b"TN", AF_), (*b"TO", OC_), (*b"TR", AS_), (*b"TT", NA_), (*b"TV", OC_), (*b"TW", AS_),
    (*b"TZ", AF_), (*b"UA", EU_), (*b"UG", AF_), (*b"UM", OC_), (*b"US", NA_), (*b"UY", SA_),
    (*b"UZ", AS_), (*b"VA", EU_), (*b"VC", NA_), (*b"VE", SA_), (*b"VG", NA_), (*b"VI", NA_),
    (*b"VN", AS_), (*b"VU", OC_), (*b"WF", OC_), (*b"WS", OC_), (*b"YE", AS_), (*b"YT", AF_),
    (*b"ZA", AF_), (*b"ZM", AF_), (*b"ZW", AF_),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_unique_and_complete() {
        assert!(COUNTRIES.windows(2).all(|w| w[0].0 < w[1].0));
        let total: usize = Continent::ALL.iter().map(|c| c.countries().count()).sum();
        assert_eq!(total, 249);
        assert_eq!(Continent::Africa.countries().count(), 58);
        assert_eq!(Continent::SouthAmerica.countries().count(), 14);
        assert_eq!(Continent::Antarctica.countries().count(), 5);
    }

    #[test]
    fn lookups() {
        let cc = |s| CountryCode::new(s).unwrap();
        assert!(is_country(cc("de")));
        assert!(!is_country(cc("XK")));
        assert!(!is_country(cc("EU")));
        assert_eq!(continent_of(cc("TR")), Some(Continent::Asia));
        assert_eq!(continent_of(cc("RU")), Some(Continent::Europe));
        assert_eq!(continent_of(cc("BR")), Some(Continent::SouthAmerica));
        assert_eq!(
            Continent::from_name("North America"),
            Some(Continent::NorthAmerica)
        );
        assert_eq!(
            Continent::from_name("south-america"),
            Some(Continent::SouthAmerica)
        );
        assert_eq!(Continent::from_code("oc"), Some(Continent::Oceania));
        assert_eq!(Continent::from_name("atlantis"), None);
    }
}
