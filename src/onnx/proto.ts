/**
 * The one place kiln touches the ONNX protobuf definitions (onnx-buf, ONNX 1.20, on
 * @bufbuild/protobuf 2). Everything else imports message types and helpers from here, so the
 * binding can be swapped without touching the rest of the code base.
 */
export {create, fromBinary, toBinary, clone} from '@bufbuild/protobuf'
export type {DescMessage} from '@bufbuild/protobuf'
export {
  AttributeProtoSchema,
  AttributeProto_AttributeType as AttributeType,
  GraphProtoSchema,
  ModelProtoSchema,
  NodeProtoSchema,
  OperatorSetIdProtoSchema,
  StringStringEntryProtoSchema,
  TensorProtoSchema,
  TensorProto_DataLocation as DataLocation,
  TensorProto_DataType as DataType,
  TensorShapeProtoSchema,
  TensorShapeProto_DimensionSchema,
  TypeProtoSchema,
  TypeProto_TensorSchema,
  ValueInfoProtoSchema,
} from 'onnx-buf'
export type {
  AttributeProto,
  GraphProto,
  ModelProto,
  NodeProto,
  OperatorSetIdProto,
  StringStringEntryProto,
  TensorProto,
  TensorShapeProto,
  TypeProto,
  ValueInfoProto,
} from 'onnx-buf'
