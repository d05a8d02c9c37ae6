//! Validated values: a strength, a fraction, a radius, a non-empty list. The plan parser and
//! the engine's own configuration types (`RegConfig`, `AdvConfig`, `AttackConfig`,
//! `TrainingProtocol`) hold them, so a value that reached a configuration is valid, and a bad
//! value in a plan is refused while the plan is being parsed, at its line and column.

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use std::fmt;

/// A finite number > 0: a regularization strength β, a clip value C, a learning rate.
#[derive(Clone, Copy, PartialEq, PartialOrd)]
pub struct Positive(pub f64);

impl fmt::Debug for Positive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl Positive {
    /// The number.
    pub fn get(self) -> f64 {
        self.0
    }

    /// `v` if it is a finite number > 0; else the reason.
    pub fn new(v: f64) -> Result<Self, String> {
        if !(v.is_finite() && v > 0.0) {
            return Err(format!("expected a number > 0 (a strength, clip value or rate), found {v}"));
        }
        Ok(Self(v))
    }
}

impl<'de> Deserialize<'de> for Positive {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::new(f64::deserialize(d)?).map_err(de::Error::custom)
    }
}

impl Serialize for Positive {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.0)
    }
}

/// A number in [0, 1): momentum, the norm-decay running-average factor γ.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Fraction(pub f64);

impl Fraction {
    /// The number.
    pub fn get(self) -> f64 {
        self.0
    }

    /// `v` if it lies in [0, 1); else the reason.
    pub fn new(v: f64) -> Result<Self, String> {
        if !(0.0..1.0).contains(&v) {
            return Err(format!("expected a number in [0, 1), found {v}"));
        }
        Ok(Self(v))
    }
}

impl<'de> Deserialize<'de> for Fraction {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::new(f64::deserialize(d)?).map_err(de::Error::custom)
    }
}

impl Serialize for Fraction {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.0)
    }
}

/// A list with at least one entry and no entry twice (a grid axis: models, strengths, seeds):
/// an empty axis would make an empty grid, a repeated one the same cell twice.
#[derive(Debug, Clone, PartialEq)]
pub struct NonEmpty<T>(pub Vec<T>);

impl<T> NonEmpty<T> {
    /// The entries, in the plan's order.
    pub fn iter(&self) -> std::slice::Iter<'_, T> {
        self.0.iter()
    }

    /// The first entry (there always is one).
    pub fn first(&self) -> &T {
        &self.0[0]
    }
}

impl<T: PartialEq + fmt::Debug> NonEmpty<T> {
    /// `v` if it has at least one entry and no entry twice; else the reason.
    pub fn new(v: Vec<T>) -> Result<Self, String> {
        if v.is_empty() {
            return Err("this list is empty: give at least one entry (an empty list makes an empty grid)".to_string());
        }
        for (i, a) in v.iter().enumerate() {
            if v[..i].contains(a) {
                return Err(format!("{a:?} appears twice in this list: each entry must be distinct"));
            }
        }
        Ok(Self(v))
    }
}

impl<'de, T: Deserialize<'de> + PartialEq + fmt::Debug> Deserialize<'de> for NonEmpty<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::new(Vec::<T>::deserialize(d)?).map_err(de::Error::custom)
    }
}

impl<T: Serialize> Serialize for NonEmpty<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

/// A perturbation radius in input units on [0, 1] images: a finite number ≥ 0, written
/// `"8/255"`, `"0.5"` or a plain number. Radii are not bounded by 1 here: an ℓ2 radius may
/// exceed 1 (CIFAR-10's image cube has ℓ2 diameter √3072 ≈ 55.4). The configuration that
/// knows the norm bounds it by that norm's diameter of the cube (`attack::AttackConfig`:
/// ℓ∞ radii ≤ 1, ℓ2 radii ≤ √3072); [`Eps`] is the ℓ∞-only radius of adversarial training.
#[derive(Clone, Copy, PartialEq)]
pub struct Radius(pub f64);

impl fmt::Debug for Radius {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.label())
    }
}

impl Radius {
    /// The radius.
    pub fn get(self) -> f64 {
        self.0
    }

    /// Parses `k/255`-style fractions or decimals.
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let value = match t.split_once('/') {
            Some((a, b)) => {
                let a: f64 = a.trim().parse().map_err(|_| format!("'{text}': the numerator is not a number"))?;
                let b: f64 = b.trim().parse().map_err(|_| format!("'{text}': the denominator is not a number"))?;
                if b == 0.0 {
                    return Err(format!("'{text}': division by zero"));
                }
                a / b
            }
            None => t.parse().map_err(|_| format!("'{text}' is not a radius: write e.g. \"1/255\" or \"0.0039\""))?,
        };
        Self::check(value).map_err(|e| format!("'{text}': {e}"))
    }

    /// `value` if it is a finite number ≥ 0; else the reason.
    pub fn check(value: f64) -> Result<Self, String> {
        if !(value.is_finite() && value >= 0.0) {
            return Err(format!("a radius must be a finite number ≥ 0, found {value}"));
        }
        Ok(Self(value))
    }

    /// A name usable in a CSV column: `1_255` for 1/255 (any k/255), else the decimal with `_`
    /// for the point (`0_004`, `0_5`).
    pub fn column_suffix(self) -> String {
        let k = self.0 * 255.0;
        if (k - k.round()).abs() < 1e-9 {
            format!("{}_255", k.round() as u64)
        } else {
            format!("{}", self.0).replace(['.', '-'], "_")
        }
    }

    /// A short label for tables and plots: `1/255` or the decimal.
    pub fn label(self) -> String {
        let k = self.0 * 255.0;
        if (k - k.round()).abs() < 1e-9 {
            format!("{}/255", k.round() as u64)
        } else {
            format!("{}", self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Radius {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Radius;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a radius such as \"1/255\", \"0.0039\" or 0.0039")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Radius, E> {
                Radius::parse(v).map_err(E::custom)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Radius, E> {
                Radius::check(v).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Radius, E> {
                Radius::check(v as f64).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Radius, E> {
                Radius::check(v as f64).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for Radius {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.0)
    }
}

/// An ℓ∞ radius in [0, 1] on [0, 1] images (adversarial training's ε and step), written as a
/// [`Radius`].
#[derive(Clone, Copy, PartialEq)]
pub struct Eps(pub f64);

impl fmt::Debug for Eps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.label())
    }
}

impl Eps {
    /// The radius.
    pub fn get(self) -> f64 {
        self.0
    }

    /// Parses `k/255`-style fractions or decimals.
    pub fn parse(text: &str) -> Result<Self, String> {
        let r = Radius::parse(text)?;
        Self::check(r.get()).map_err(|e| format!("'{text}': {e}"))
    }

    /// `value` if it lies in [0, 1]; else the reason.
    pub fn check(value: f64) -> Result<Self, String> {
        if !(0.0..=1.0).contains(&value) {
            return Err(format!("a radius must lie in [0, 1] for images in [0, 1], found {value}"));
        }
        Ok(Self(value))
    }

    /// A short label for tables and plots: `1/255` or the decimal.
    pub fn label(self) -> String {
        Radius(self.0).label()
    }
}

impl<'de> Deserialize<'de> for Eps {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Eps::check(Radius::deserialize(d)?.get()).map_err(de::Error::custom)
    }
}

impl Serialize for Eps {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.0)
    }
}

/// A plan's name: it names the results file `<name>.csv`, so only letters, digits, `-`, `_`
/// and `.` (not leading) are allowed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlanName(pub String);

impl<'de> Deserialize<'de> for PlanName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let ok_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.';
        if s.is_empty() || s.starts_with('.') || !s.chars().all(ok_char) {
            return Err(de::Error::custom(format!(
                "plan name {s:?} cannot name a results file: use letters, digits, '-', '_' and '.' (not first)"
            )));
        }
        Ok(Self(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn radii_parse_fractions_and_name_columns() {
        assert!((Eps::parse("1/255").unwrap().get() - 1.0 / 255.0).abs() < 1e-15);
        assert_eq!(Radius::parse("8/255").unwrap().column_suffix(), "8_255");
        assert_eq!(Radius::parse("0").unwrap().column_suffix(), "0_255");
        assert_eq!(Radius::parse("0.004").unwrap().column_suffix(), "0_004");
        assert_eq!(Radius::parse("0.5").unwrap().column_suffix(), "0_5");
        assert_eq!(Eps::parse("2/255").unwrap().label(), "2/255");
        assert!(Eps::parse("1/0").is_err());
        assert!(Eps::parse("abc").is_err());
        // ℓ∞ training radii stop at 1; radii in general do not (an ℓ2 ball of radius 2).
        assert!(Eps::parse("2").unwrap_err().contains("[0, 1]"));
        assert_eq!(Radius::parse("2").unwrap().get(), 2.0);
        for bad in ["-0.1", "nan", "inf", "1/0", "x"] {
            assert!(Radius::parse(bad).is_err(), "{bad}");
        }
        assert!(serde_json::from_str::<Eps>("1.5").is_err());
        assert_eq!(serde_json::from_str::<Radius>("\"3/2\"").unwrap().get(), 1.5);
    }
}
