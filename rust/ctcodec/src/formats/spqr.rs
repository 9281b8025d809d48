//! ctcodec's SpQR format: finding the stored tensors of each SpQR weight in a file,
//! checking them against each other, and decoding them ([`crate::codecs::spqr`]
//! documents the tensors and does the arithmetic).

use std::collections::{BTreeMap, HashMap};

use crate::container::{SafetensorsFile, TensorInfo};
use crate::dtype::Dtype;
use crate::error::{CodecError, Result};

use super::StoredWeight;
use crate::codecs::spqr::decode::Stored as StoredSlices;
use crate::codecs::spqr::{Geometry, OutlierLayout, Outliers, SpqrParams};

/// The stored tensors of one SpQR weight.
#[derive(Clone, Debug)]
pub struct Stored {
    pub module: String,
    pub geometry: Geometry,
    pub layout: OutlierLayout,
    pub shape: TensorInfo,
    pub codes: TensorInfo,
    pub stats: TensorInfo,
    pub second_order: TensorInfo,
    pub perm: TensorInfo,
    pub offsets: TensorInfo,
    pub col_vals: TensorInfo,
}

impl StoredWeight for Stored {
    fn module(&self) -> &str {
        &self.module
    }

    fn decode_into(&self, file: &SafetensorsFile, split: bool, out: &mut [u8]) -> Result<()> {
        decode(file, self, split, out)
    }

    fn members(&self) -> Vec<&TensorInfo> {
        vec![
            &self.shape,
            &self.codes,
            &self.stats,
            &self.second_order,
            &self.perm,
            &self.offsets,
            &self.col_vals,
        ]
    }
}

fn expect(file: &SafetensorsFile, t: &TensorInfo, dtype: Dtype, shape: &[usize]) -> Result<()> {
    if t.dtype != dtype || t.shape != shape {
        return Err(CodecError::tensor(
            file.path(),
            &t.name,
            format!(
                "is {} {:?}; the SpQR layout needs {dtype} {shape:?}",
                t.dtype, t.shape
            ),
        ));
    }
    Ok(())
}

/// The SpQR weights of `file`, keyed by their `weight_codes` tensor's name.
pub fn find(
    file: &SafetensorsFile,
    specs: &HashMap<String, SpqrParams>,
) -> Result<BTreeMap<String, Stored>> {
    let header = file.header();
    let mut found = BTreeMap::new();
    for (module, params) in specs {
        let part = |p: &str| header.get(&format!("{module}.{p}")).cloned();
        let Some(codes) = part("weight_codes") else {
            continue;
        };
        let err = |reason: String| CodecError::tensor(file.path(), module, reason);
        let need = |p: &str| part(p).ok_or_else(|| err(format!("SpQR weight has no {p}")));
        let shape = need("weight_shape")?;
        let dense = super::sparse_bitmask::read_shape(file, &shape)?;
        let [rows, cols] = dense[..] else {
            return Err(err(format!("SpQR weight_shape must be 2-D, is {dense:?}")));
        };
        let geometry = Geometry::new(*params, rows, cols).map_err(err)?;
        let layouts: Vec<OutlierLayout> = [OutlierLayout::Csr, OutlierLayout::Ptcsr]
            .into_iter()
            .filter(|l| part(l.parts().0).is_some() || part(l.parts().1).is_some())
            .collect();
        let layout = match layouts[..] {
            [one] => one,
            [] => return Err(err("SpQR weight has no outlier tensors".into())),
            _ => return Err(err("SpQR weight has both CSR and PTCSR outliers".into())),
        };
        let (off_name, cv_name) = layout.parts();
        let parts = Stored {
            module: module.clone(),
            geometry,
            layout,
            stats: need("weight_stats")?,
            second_order: need("weight_second_order")?,
            perm: need("weight_perm")?,
            offsets: need(off_name)?,
            col_vals: need(cv_name)?,
            shape,
            codes,
        };
        expect(file, &parts.codes, Dtype::I32, &geometry.codes_shape())?;
        expect(file, &parts.stats, Dtype::I32, &geometry.stats_shape())?;
        expect(
            file,
            &parts.second_order,
            Dtype::F16,
            &geometry.second_order_shape(),
        )?;
        expect(file, &parts.perm, Dtype::I32, &[cols])?;
        let offsets_len = match layout {
            OutlierLayout::Csr => rows + 1,
            OutlierLayout::Ptcsr => geometry.tiles + 1,
        };
        expect(file, &parts.offsets, Dtype::I32, &[offsets_len])?;
        expect(file, &parts.col_vals, Dtype::I32, &[parts.col_vals.numel()])?;
        found.insert(parts.codes.name.clone(), parts);
    }
    Ok(found)
}

/// Decodes one SpQR weight into `out` (zeroed, exactly its dense size).
fn decode(file: &SafetensorsFile, parts: &Stored, split: bool, out: &mut [u8]) -> Result<()> {
    let g = &parts.geometry;
    let err = |e: String| CodecError::tensor(file.path(), &parts.module, e);
    let offsets = file.bytes(&parts.offsets)?;
    let col_vals = file.bytes(&parts.col_vals)?;
    let outliers = match parts.layout {
        OutlierLayout::Csr => Outliers::from_csr(g, &offsets, &col_vals),
        OutlierLayout::Ptcsr => Outliers::from_ptcsr(g, &offsets, &col_vals),
    }
    .map_err(err)?;
    let codes = file.bytes(&parts.codes)?;
    let stats = file.bytes(&parts.stats)?;
    let second_order = file.bytes(&parts.second_order)?;
    let perm = file.bytes(&parts.perm)?;
    let stored = StoredSlices {
        codes: &codes,
        stats: &stats,
        second_order: &second_order,
        perm: &perm,
        outliers: &outliers,
    };
    crate::codecs::spqr::decode_into(g, &stored, split, out).map_err(err)?;
    Ok(())
}
