//! Each seed provider end to end, through credproxy against its fake.

mod apicbase;
mod apiv1;
mod bace;
mod baselime;
mod blendvision;
